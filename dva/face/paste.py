"""Putting an edited crop back into its full-resolution frame.

"feather" (default): the edited crop is warped into the frame and blended only inside the feathered mask, so
everything outside the face keeps its original pixels and resolution. "square" (the reference): the edit replaces
the masked part of the original crop and the whole crop square is warped back, resampling the box around the face.
"""

from __future__ import annotations

import cv2
import numpy as np

from dva.face.config import MaskConfig
from dva.face.mask import feather
from dva.face.warp import crop_face, warp_to_frame


def paste_face(frame: np.ndarray, crop: np.ndarray, quad: np.ndarray, mask: np.ndarray, cfg: MaskConfig) -> np.ndarray:
    """A copy of `frame` with `crop` (the edited [S, S, 3] crop of `quad`) pasted in where `mask` [S, S] says."""
    height, width = frame.shape[:2]
    size = crop.shape[0]
    if cfg.paste_mode == "square":
        original = crop_face(frame, quad, size)
        crop = np.where(mask[..., None] > 0.5, crop, original)
        alpha = np.ones((size, size), np.float32)
    else:
        alpha = feather(mask, cfg.dilate_px, cfg.blur_px)
    # Edge-replicate the crop so bilinear samples at its border do not mix in black; the alpha fades there instead.
    colour, (x0, y0, x1, y1) = warp_to_frame(crop, quad, width, height, cv2.BORDER_REPLICATE)
    if colour.size == 0:  # the quad lies outside the frame
        return frame.copy()
    weight, _ = warp_to_frame(alpha, quad, width, height, cv2.BORDER_CONSTANT)
    out = frame.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    weight = weight[..., None]
    out[y0:y1, x0:x1] = np.clip(region + (colour.astype(np.float32) - region) * weight + 0.5, 0, 255).astype(np.uint8)
    return out
