"""FFHQ/STIT alignment quads from 68 landmarks, smoothed over the whole track.

Per frame (the FFHQ dataset's alignment, as STIT and the DVA reference use it):
  e = mean of both eye centres, m = mouth-corner midpoint, eye_to_eye = right - left eye, eye_to_mouth = m - e
  x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1], normalised, times max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)
  y = flipud(x) * [-1, 1]  (x turned 90 degrees, pointing down the face)
  c = e + 0.1 eye_to_mouth
  quad = [c - x - y, c - x + y, c + x + y, c + x - y]  (top-left, bottom-left, bottom-right, top-right)
Over time c is smoothed with sigma_centre and the axis x with sigma_axes. y is rebuilt from the smoothed x, which
equals smoothing y with the same sigma (the 90-degree turn is linear) and keeps every quad an exact square.
"""

from __future__ import annotations

import numpy as np

from dva.face.config import AlignConfig
from dva.face.smooth import smooth_track


def _perpendicular(x: np.ndarray) -> np.ndarray:
    return np.stack([-x[..., 1], x[..., 0]], axis=-1)


def quad_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre c and half-axis x ([..., 2] each) of the FFHQ quad for landmarks [..., 68, 2]."""
    points = np.asarray(points, dtype=np.float64)
    eye_left = points[..., 36:42, :].mean(axis=-2)
    eye_right = points[..., 42:48, :].mean(axis=-2)
    eye_mid = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (points[..., 48, :] + points[..., 54, :]) / 2 - eye_mid
    x = eye_to_eye - _perpendicular(eye_to_mouth)  # flipud(v) * [-1, 1] is v turned 90 degrees
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    half = np.maximum(np.linalg.norm(eye_to_eye, axis=-1) * 2.0, np.linalg.norm(eye_to_mouth, axis=-1) * 1.8)
    return eye_mid + 0.1 * eye_to_mouth, x * half[..., None]


def quads_from_axes(centre: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Quads [..., 4, 2]: top-left, bottom-left, bottom-right, top-right corners."""
    y = _perpendicular(x)
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y], axis=-2)


def track_quads(points: np.ndarray, cfg: AlignConfig) -> np.ndarray:
    """Smoothed quads [N, 4, 2] (float64, frame pixels) for a whole landmark track [N, 68, 2]."""
    centre, x = quad_axes(points)
    return quads_from_axes(smooth_track(centre, cfg.sigma_centre), smooth_track(x, cfg.sigma_axes))
