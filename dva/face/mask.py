"""Which crop pixels belong to the face: a landmark hull mask, or a face parser behind the `Masker` interface.

The paste-back mask (SPEC 1.5) is best made by a face parser on the *original* crop (BiSeNet classes minus
background, cloth, hat, ears, neck and hair). Without one, the convex hull of the jaw line and the brows lifted
onto the forehead covers the same skin region closely enough for pasting.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from dva.face.config import MaskConfig
from dva.face.warp import quad_bounds

JAW = slice(0, 17)
BROWS = slice(17, 27)
CHIN = 8


class Masker(Protocol):
    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """The region to paste, [S, S] bool, for an RGB uint8 crop [S, S, 3]."""
        ...


def _face_outline(points: np.ndarray, brow_lift: float) -> np.ndarray:
    """The jaw points and the brows moved `brow_lift` x brow-to-chin height further from the chin, [27, 2]: the
    outline whose convex hull is the face with its forehead."""
    points = np.asarray(points, np.float64)
    brows = points[BROWS]
    lift = (brows.mean(axis=0) - points[CHIN]) * brow_lift
    return np.concatenate([points[JAW], brows + lift])


def _fill_hull(outline: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """The filled convex hull of `outline` on the [height, width] bool grid whose pixel (0, 0) is pixel (x0, y0)."""
    hull = cv2.convexHull(np.round(outline * 16).astype(np.int32))  # 4 fractional bits: sub-pixel edges
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, hull - np.array([x0, y0], np.int32) * 16, 1, lineType=cv2.LINE_AA, shift=4)
    return mask > 0


def landmark_hull_mask(points: np.ndarray, size: int, brow_lift: float) -> np.ndarray:
    """Filled convex hull of jaw points and brows moved `brow_lift` x brow-to-chin height further from the chin.

    `points` are the 68 landmarks in crop coordinates.
    """
    return _fill_hull(_face_outline(points, brow_lift), 0, 0, size, size)


def landmark_hull_region(
    points: np.ndarray, brow_lift: float, width: int, height: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The same hull for landmarks in frame pixels, rasterised over its bounding box only (frames may be 1080p):
    (bool region, (x0, y0, x1, y1)) clipped to the `width` x `height` frame, empty when the hull is outside it."""
    outline = _face_outline(points, brow_lift)
    x0, y0, x1, y1 = quad_bounds(outline, width, height, margin=1)  # anti-aliased edges reach one pixel further
    # Drawn on a grid 2 px larger all round: OpenCV's anti-aliasing differs at the edge of the image it draws on.
    hull = _fill_hull(outline, x0 - 2, y0 - 2, x1 - x0 + 4, y1 - y0 + 4)
    return hull[2:-2, 2:-2], (x0, y0, x1, y1)


def feather(mask: np.ndarray, dilate_px: int, blur_px: float) -> np.ndarray:
    """A soft [0, 1] float32 alpha: `mask` grown by `dilate_px`, its edge blurred with a Gaussian of `blur_px`."""
    alpha = mask.astype(np.float32)
    if dilate_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        alpha = cv2.dilate(alpha, kernel)
    if blur_px > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur_px)
    return np.clip(alpha, 0.0, 1.0)


def face_mask(crop: np.ndarray, points: np.ndarray, cfg: MaskConfig, masker: Masker | None = None) -> np.ndarray:
    """The paste mask [S, S] bool of an original crop: the parser's when one is given, else the landmark hull.

    `points` are the frame's 68 landmarks in crop coordinates (`dva.face.warp.to_crop_coords`).
    """
    if masker is not None:
        return np.asarray(masker(crop), dtype=bool)
    return landmark_hull_mask(points, crop.shape[0], cfg.brow_lift)
