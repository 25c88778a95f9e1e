"""What a face detector + 68-point landmark back end returns, and the interface every back end implements.

A back end finds every face in an RGB frame and returns each with its box and 68 (x, y) points in the iBUG 300-W
order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) that FFHQ/STIT alignment and the hull mask use.
Choosing which face to follow is not the back end's business (see `dva.face.track`). The back ends import this
module, `dva.face.landmarker` imports them (when one is built): no import circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class DetectedFace:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in frame pixels
    points: np.ndarray  # (68, 2) float32 x, y in frame pixels
    score: float

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    @property
    def size(self) -> float:
        """Side of the square with the box's area: the scale for distances between detections."""
        return self.area**0.5


class FaceLandmarker(Protocol):
    def detect(self, frame: np.ndarray) -> list[DetectedFace]:
        """Every face in an RGB uint8 frame [H, W, 3], in no particular order."""
        ...

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 68 (x, y) points of the face in `box` (x0, y0, x1, y1 as this back end's detector draws boxes),
        without running the detector: how `dva.face.track` follows a face between detections."""
        ...
