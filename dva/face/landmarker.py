"""The factory that builds the face detector + 68-point landmark back end a `FaceConfig` names.

Back ends are imported only when built, so an optional package (dlib, face-alignment, insightface) matters only when
configured. What they return and the interface they implement are in `dva.face.detection`.
"""

from __future__ import annotations

from dva.face.config import FaceConfig
from dva.face.detection import DetectedFace, FaceLandmarker

__all__ = ["DetectedFace", "FaceLandmarker", "build_landmarker"]


def build_landmarker(cfg: FaceConfig, key_prefix: str = "") -> FaceLandmarker:
    """The backend `cfg.backend` names, with its weights resolved from config (never downloaded).

    Raises MissingWeightsError naming the config key when a weight file is unset or absent; `key_prefix` is where
    the face config sits in the user's config ("face." in a job's), so errors name the key the user sets.
    """
    if cfg.backend == "dlib":
        from dva.face.backends.dlib_hog import DlibLandmarker

        return DlibLandmarker(cfg.dlib, key_prefix)
    if cfg.backend == "fan":
        from dva.face.backends.fan import FanLandmarker

        return FanLandmarker(cfg.fan, key_prefix)
    from dva.face.backends.insightface import InsightfaceLandmarker

    return InsightfaceLandmarker(cfg.insightface, key_prefix)
