"""Lossless perspective crop of a frame by its quad, and the inverse warp back into the frame.

Coordinates are OpenCV's: pixel (i, j) has its centre at (x=j, y=i). The quad's corners map to the crop's outer
pixel edges, so a quad of side s gives a crop whose pixels are s/size frame pixels wide. No JPEG or other
intermediate: frames are warped once, straight to the crop size.

Downscaling by more than 2x with bilinear sampling aliases (faces in 1080p video are often 600+ px): the quad's
neighbourhood is first shrunk by an integer factor with area averaging, then warped.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import cv2
import numpy as np


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def crop_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """3x3 homography from frame pixel coordinates to crop pixel coordinates."""
    edges = np.array([[0, 0], [0, size], [size, size], [size, 0]], dtype=np.float32)
    to_edges = cv2.getPerspectiveTransform(np.asarray(quad, np.float32) + 0.5, edges).astype(np.float64)
    return _translation(-0.5, -0.5) @ to_edges @ _translation(0.5, 0.5)


def to_crop_coords(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Frame points [..., 2] in crop coordinates."""
    points = np.asarray(points, np.float64)
    flat = cv2.perspectiveTransform(points.reshape(1, -1, 2), crop_matrix(quad, size))
    return flat.reshape(points.shape)


def quad_scale(quad: np.ndarray, size: int) -> float:
    """Frame pixels per crop pixel."""
    return float(np.linalg.norm(np.asarray(quad[3]) - np.asarray(quad[0])) / size)


def quad_bounds(quad: np.ndarray, width: int, height: int, margin: int = 2) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the quad (or any points [N, 2]) plus `margin`, clipped to the frame; empty when it is
    outside the frame."""
    x0, y0 = np.floor(np.min(quad, axis=0)).astype(int) - margin
    x1, y1 = np.ceil(np.max(quad, axis=0)).astype(int) + margin + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    return x0, y0, max(min(x1, width), x0), max(min(y1, height), y0)


def crop_face(frame: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """The [size, size, 3] crop of `frame` inside `quad`; outside the frame the image is mirrored (as FFHQ pads)."""
    matrix = crop_matrix(quad, size)
    shrink = int(np.floor(quad_scale(quad, size)))
    if shrink >= 2:
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = quad_bounds(quad, width, height, margin=2 * shrink)
        if x1 > x0 and y1 > y0:
            small_w, small_h = -(-(x1 - x0) // shrink), -(-(y1 - y0) // shrink)
            small = cv2.resize(frame[y0:y1, x0:x1], (small_w, small_h), interpolation=cv2.INTER_AREA)
            sx, sy = small_w / (x1 - x0), small_h / (y1 - y0)
            # frame centre coords -> region -> small-image centre coords: (x - x0 + 0.5) * s - 0.5
            to_small = _translation(-0.5, -0.5) @ np.diag([sx, sy, 1.0]) @ _translation(0.5 - x0, 0.5 - y0)
            frame, matrix = small, matrix @ np.linalg.inv(to_small)
    return cv2.warpPerspective(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def iter_crops(frames: Iterable[np.ndarray], quads: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Pass 2 of a video: its frames again, each cropped by its quad."""
    for index, frame in enumerate(frames):
        if index >= len(quads):
            raise ValueError(f"the video has more frames than the {len(quads)} quads computed for it")
        yield crop_face(frame, quads[index], size)


def warp_to_frame(
    image: np.ndarray, quad: np.ndarray, width: int, height: int, border: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Warp a crop-space image back into the frame region the quad covers: (region image, (x0, y0, x1, y1)).

    Only the quad's bounding box is computed, so pasting costs the face area, not the frame area.
    """
    x0, y0, x1, y1 = quad_bounds(quad, width, height)
    if x1 <= x0 or y1 <= y0:
        return image[:0, :0], (x0, y0, x1, y1)
    matrix = _translation(-x0, -y0) @ np.linalg.inv(crop_matrix(quad, image.shape[0]))
    region = cv2.warpPerspective(image, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=border)
    return region, (x0, y0, x1, y1)
