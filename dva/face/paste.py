"""Putting edited crops back into their full-resolution frame.

"feather" (default): the edited crop is warped into the frame and blended only inside the feathered mask, so
everything outside the face keeps its original pixels and resolution. "square" (the reference): the edit replaces
the masked part of the original crop and the whole crop square is warped back, resampling the box around the face.

Several faces in one frame (`paste_faces`):
- A face's size is its quad's side in frame pixels (the quads are smoothed over time, so two faces of about the same
  size do not swap order from frame to frame as their landmark boxes would). A larger face is taken to be nearer
  the camera.
- Faces are pasted in order of size, smaller first; equal sizes keep their given order. Where the masks of two
  edited faces overlap, the one pasted later (the larger) wins.
- A face's region is the filled convex hull of its landmarks in frame pixels with the brows lifted onto the
  forehead, as the landmark hull mask (`MaskConfig.brow_lift`). Each edited face's paste weight is zero on the
  regions of all faces pasted after it, edited or not, so an edit never paints over a nearer face: the pixels of an
  unedited face larger than every edited one stay byte-identical to the input frame.
- Faces without a crop are not pasted; they only hide their region from smaller edits.
- One edited face (with or without smaller unedited ones) gives exactly `paste_face`'s result; no edited face
  gives a copy of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from dva.face.config import MaskConfig
from dva.face.mask import feather, landmark_hull_region
from dva.face.warp import crop_face, warp_to_frame


@dataclass(frozen=True)
class FaceInFrame:
    """One tracked face in a frame: its landmarks in frame pixels and its quad; `crop`/`mask` set when it is edited."""

    points: np.ndarray  # (68, 2) frame pixels
    quad: np.ndarray  # (4, 2)
    crop: Optional[np.ndarray] = None  # edited [S, S, 3] uint8 crop; None: not edited (its pixels must stay)
    mask: Optional[np.ndarray] = None  # its paste mask [S, S] in crop coordinates (as `face_mask` returns)

    def __post_init__(self):
        if (self.crop is None) != (self.mask is None):
            raise ValueError("a FaceInFrame is edited with both `crop` and `mask`, or not edited with neither")

    @property
    def size(self) -> float:
        """The quad's side in frame pixels."""
        return float(np.linalg.norm(np.asarray(self.quad[3], np.float64) - self.quad[0]))


def _paste_into(out: np.ndarray, crop: np.ndarray, quad: np.ndarray, mask: np.ndarray, cfg: MaskConfig,
                hidden: Optional[np.ndarray] = None) -> None:
    """Paste `crop` (the edited [S, S, 3] crop of `quad`) into `out` in place where `mask` [S, S] says, except on
    the frame pixels where `hidden` (bool [H, W]) is set."""
    height, width = out.shape[:2]
    size = crop.shape[0]
    if cfg.paste_mode == "square":
        original = crop_face(out, quad, size)
        crop = np.where(mask[..., None] > 0.5, crop, original)
        alpha = np.ones((size, size), np.float32)
    else:
        alpha = feather(mask, cfg.dilate_px, cfg.blur_px)
    # Edge-replicate the crop so bilinear samples at its border do not mix in black; the alpha fades there instead.
    colour, (x0, y0, x1, y1) = warp_to_frame(crop, quad, width, height, cv2.BORDER_REPLICATE)
    if colour.size == 0:  # the quad lies outside the frame
        return
    weight, _ = warp_to_frame(alpha, quad, width, height, cv2.BORDER_CONSTANT)
    if hidden is not None:
        weight[hidden[y0:y1, x0:x1]] = 0.0
    region = out[y0:y1, x0:x1].astype(np.float32)
    weight = weight[..., None]
    out[y0:y1, x0:x1] = np.clip(region + (colour.astype(np.float32) - region) * weight + 0.5, 0, 255).astype(np.uint8)


def paste_face(frame: np.ndarray, crop: np.ndarray, quad: np.ndarray, mask: np.ndarray, cfg: MaskConfig) -> np.ndarray:
    """A copy of `frame` with `crop` (the edited [S, S, 3] crop of `quad`) pasted in where `mask` [S, S] says."""
    out = frame.copy()
    _paste_into(out, crop, quad, mask, cfg)
    return out


def paste_faces(frame: np.ndarray, faces: Sequence[FaceInFrame], cfg: MaskConfig) -> np.ndarray:
    """A copy of `frame` with every edited face of `faces` pasted in, smaller first, none over a larger face."""
    height, width = frame.shape[:2]
    order = sorted(faces, key=lambda face: face.size)  # stable: equal sizes keep their given order
    regions = [landmark_hull_region(face.points, cfg.brow_lift, width, height) for face in order]
    out = frame.copy()
    for index, face in enumerate(order):
        if face.crop is None:
            continue
        hidden = None
        if index + 1 < len(order):
            hidden = np.zeros((height, width), bool)
            for region, (x0, y0, x1, y1) in regions[index + 1:]:
                hidden[y0:y1, x0:x1] |= region
        _paste_into(out, face.crop, face.quad, face.mask, cfg, hidden)
    return out
