"""dlib backend: HOG face detector and the 68-point shape predictor shipped by face_recognition_models.

Runs offline on CPU with no download (~20 ms detection on a 640 px frame, ~1 ms per face for landmarks). It is the
landmark scheme the reference pipeline (STIT/FFHQ alignment) was built on.

Licence: the 68-point predictor was trained on the iBUG 300-W data set, whose licence excludes commercial use.
Products that must be usable commercially should configure the `fan` or `insightface` backend instead.
"""

from __future__ import annotations

import cv2
import numpy as np

from dva.dlib_models import import_dlib, packaged_model
from dva.errors import MissingWeightsError
from dva.face.config import DlibConfig
from dva.face.detection import DetectedFace
from dva.storage import local_path

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


class ShapePredictor68:
    """dlib's 68-point landmark regressor for a given face box (also used on boxes from other detectors).

    `chooser` is the config key that chose dlib here and `choice` what it chose: both go into the error when dlib
    is not installed."""

    def __init__(self, predictor: str = "", config_key: str = "dlib.predictor", chooser: str = "backend",
                 choice: str = "backend 'dlib'"):
        self._dlib = dlib = import_dlib(chooser, choice)
        path = local_path(predictor, config_key=config_key) if predictor else packaged_model(PREDICTOR_FILE, config_key)
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as err:
            raise MissingWeightsError(str(path), config_key, f"is not a dlib shape predictor ({err})") from None
        parts = self._predictor(np.zeros((8, 8, 3), np.uint8), dlib.rectangle(0, 0, 7, 7)).num_parts
        if parts != 68:
            raise MissingWeightsError(str(path), config_key, f"predicts {parts} points, 68 are needed")

    def __call__(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        left, top, right, bottom = (int(round(v)) for v in box[:4])
        shape = self._predictor(frame, self._dlib.rectangle(left, top, right, bottom))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class DlibLandmarker:
    """HOG detection on a frame shrunk to `detect_max_side`, landmarks on the full-resolution frame."""

    def __init__(self, cfg: DlibConfig, key_prefix: str = ""):
        self.cfg = cfg
        # First: it raises the error naming the extra.
        self._points = ShapePredictor68(cfg.predictor, f"{key_prefix}dlib.predictor", f"{key_prefix}backend")
        self._detector = import_dlib(f"{key_prefix}backend", "backend 'dlib'").get_frontal_face_detector()

    def detect(self, frame: np.ndarray) -> list[DetectedFace]:
        scale = min(1.0, self.cfg.detect_max_side / max(frame.shape[:2]))
        small = frame
        if scale < 1.0:
            small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector.run(small, self.cfg.upsample, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64) / scale
            faces.append(DetectedFace(box=box, points=self._points(frame, box), score=float(score)))
        return faces

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self._points(frame, box)
