"""insightface backend: SCRFD face detection (ONNX Runtime) and 68 points from its 1k3d68 landmark model.

Files come only from config: `insightface.model_zoo.get_model` is given the resolved local path, never a model
name (a name would make it download). When no landmark model is configured, the 68 points come from dlib's
predictor run on the SCRFD box, so a licence-clean detector can still feed FFHQ alignment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dva.errors import MissingWeightsError
from dva.face.config import InsightfaceConfig
from dva.face.detection import DetectedFace
from dva.storage import local_path
from dva.threads import onnx_session_options


def _providers(device: str) -> list[str]:
    return ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _load(path: Path, config_key: str, device: str):
    from insightface.model_zoo import get_model

    try:
        model = get_model(str(path), providers=_providers(device), sess_options=onnx_session_options())
    except Exception as err:  # ONNX parse errors, unknown model layouts
        raise MissingWeightsError(str(path), config_key, f"cannot be loaded by insightface ({err})") from None
    if model is None:
        raise MissingWeightsError(str(path), config_key, "is not a model insightface recognises")
    return model


class InsightfaceLandmarker:
    def __init__(self, cfg: InsightfaceConfig, key_prefix: str = ""):
        self.cfg = cfg
        ctx_id = -1 if cfg.device == "cpu" else 0
        det_key, lmk_key = f"{key_prefix}insightface.detector_weights", f"{key_prefix}insightface.landmark_weights"
        det_path = local_path(cfg.detector_weights, config_key=det_key)
        self._detector = _load(det_path, det_key, cfg.device)
        if not hasattr(self._detector, "detect"):
            raise MissingWeightsError(str(det_path), det_key,
                                      f"is not a face detection model (insightface reads it as "
                                      f"{type(self._detector).__name__}); use an SCRFD file such as det_10g.onnx")
        self._detector.prepare(ctx_id, input_size=(cfg.det_size, cfg.det_size), det_thresh=cfg.det_thresh)
        self._landmarks = None
        self._dlib_points = None
        if cfg.landmark_weights:
            lmk_path = local_path(cfg.landmark_weights, config_key=lmk_key)
            model = _load(lmk_path, lmk_key, cfg.device)
            if getattr(model, "lmk_num", None) != 68:
                raise MissingWeightsError(str(lmk_path), lmk_key,
                                          f"is not a 68-point landmark model (insightface reads it as "
                                          f"{type(model).__name__}); use 1k3d68.onnx")
            model.prepare(ctx_id)
            self._landmarks = model
        else:
            from dva.face.backends.dlib_hog import ShapePredictor68

            self._dlib_points = ShapePredictor68(
                config_key=lmk_key, chooser=lmk_key,
                choice="an empty value (dlib's 68-point predictor on the SCRFD box; set a 1k3d68.onnx instead)")

    def _points(self, frame: np.ndarray, bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        if self._landmarks is None:
            return self._dlib_points(frame, box)
        from insightface.app.common import Face

        return np.asarray(self._landmarks.get(bgr, Face(bbox=box)))[:, :2].astype(np.float32)

    def detect(self, frame: np.ndarray) -> list[DetectedFace]:
        bgr = np.ascontiguousarray(frame[..., ::-1])  # insightface models take OpenCV's BGR order
        boxes, _ = self._detector.detect(bgr, input_size=(self.cfg.det_size, self.cfg.det_size))
        return [
            DetectedFace(box=row[:4].astype(np.float64), points=self._points(frame, bgr, row[:4]), score=float(row[4]))
            for row in boxes
        ]

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self._points(frame, np.ascontiguousarray(frame[..., ::-1]), box)
