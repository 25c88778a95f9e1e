"""Detector + 68-point landmark backends implementing `dva.face.landmarker.FaceLandmarker`; imported lazily."""
