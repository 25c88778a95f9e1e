"""One photo → the aligned crop of its largest face, exactly as the edit job aligns one video frame (unsmoothed)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from dva.face.align import track_quads
from dva.face.config import AlignConfig
from dva.face.warp import crop_face


def align_photo(rgb: np.ndarray, detect: Callable[[np.ndarray], list], align: AlignConfig) -> Optional[np.ndarray]:
    """uint8 [S, S, 3] crop of the largest face `detect` (a `FaceLandmarker.detect`) finds, or None without a face."""
    faces = detect(rgb)
    if not faces:
        return None
    points = max(faces, key=lambda f: f.area).points
    quad = track_quads(points[None].astype(np.float64), align)[0]
    return crop_face(rgb, quad, align.crop_size)
