"""The one interface every face detector + 68-point landmark backend implements, and the factory that builds one.

A backend finds every face in an RGB frame and returns each with its box and 68 (x, y) points in the iBUG 300-W
order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) that FFHQ/STIT alignment and the hull mask use.
Choosing which face to follow is not the backend's business (see `dva.face.track`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dva.face.config import FaceConfig


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


def build_landmarker(cfg: FaceConfig) -> FaceLandmarker:
    """The backend `cfg.backend` names, with its weights resolved from config (never downloaded).

    Raises MissingWeightsError naming the config key when a weight file is unset or absent.
    """
    if cfg.backend == "dlib":
        from dva.face.backends.dlib_hog import DlibLandmarker

        return DlibLandmarker(cfg.dlib)
    if cfg.backend == "fan":
        from dva.face.backends.fan import FanLandmarker

        return FanLandmarker(cfg.fan)
    from dva.face.backends.insightface import InsightfaceLandmarker

    return InsightfaceLandmarker(cfg.insightface)
