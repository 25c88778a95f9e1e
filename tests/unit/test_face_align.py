"""FFHQ quads from landmarks, temporal smoothing and the crop warp: the math, without video."""

from __future__ import annotations

import numpy as np
import pytest

from dva.face.align import quad_axes, quads_from_axes, track_quads
from dva.face.config import AlignConfig
from dva.face.smooth import smooth_track
from dva.face.warp import crop_face, crop_matrix, to_crop_coords


def _face(eye_left=(100, 100), eye_right=(140, 100), mouth_left=(110, 150), mouth_right=(130, 150)) -> np.ndarray:
    """68 points where only what the FFHQ formula reads is meaningful: both eyes' rings and the mouth corners."""
    points = np.zeros((68, 2))
    points[36:42], points[42:48] = eye_left, eye_right
    points[48], points[54] = mouth_left, mouth_right
    points[:36] = points[55:] = (120, 120)
    return points


def _rotate(points: np.ndarray, degrees: float, about=(120.0, 120.0)) -> np.ndarray:
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (points - about) @ rot.T + about


def test_upright_face_quad_matches_the_ffhq_formula_by_hand():
    # eye_to_eye (40, 0), eye_to_mouth (0, 50): x = (40, 0) + (50, 0) -> |x| = max(2*40, 1.8*50) = 90
    centre, x = quad_axes(_face())
    np.testing.assert_allclose(centre, (120, 105))
    np.testing.assert_allclose(x, (90, 0))
    np.testing.assert_allclose(quads_from_axes(centre, x), [[30, 15], [30, 195], [210, 195], [210, 15]])


def test_quad_turns_with_the_face():
    quad = quads_from_axes(*quad_axes(_face()))
    turned = quads_from_axes(*quad_axes(_rotate(_face(), 25)))
    np.testing.assert_allclose(turned, _rotate(quad, 25), atol=1e-9)


def test_crop_matrix_maps_quad_corners_to_crop_corners():
    quad = quads_from_axes(*quad_axes(_rotate(_face(), -12)))
    size = 64
    corners = to_crop_coords(quad, quad, size)
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]], atol=1e-6)
    centre = to_crop_coords(quad.mean(axis=0), quad, size)
    np.testing.assert_allclose(centre, (31.5, 31.5), atol=1e-6)
    assert crop_matrix(quad, size).shape == (3, 3)


def test_crop_of_a_large_face_is_area_filtered_not_aliased():
    """A 4x downscale of a 1-px checkerboard must come out flat grey (bilinear alone would keep stripes)."""
    board = ((np.indices((400, 400)).sum(axis=0) % 2) * 255).astype(np.uint8)
    frame = np.repeat(board[..., None], 3, axis=2)
    quad = np.array([[40, 40], [40, 360], [360, 360], [360, 40]], dtype=float)
    crop = crop_face(frame, quad, 80)
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 6


def _expected_jitter_ratio(sigma: float) -> float:
    """RMS frame-to-frame change of Gaussian-smoothed white noise over that of the raw noise.

    Raw: Var(n[t+1] - n[t]) = 2 s^2. Smoothed: s^2 * sum_k (w[k] - w[k-1])^2 for the normalised kernel w.
    """
    k = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w /= w.sum()
    return float(np.sqrt(np.sum(np.diff(np.concatenate([[0], w, [0]])) ** 2) / 2))


def _motion(track: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(np.diff(track, axis=0) ** 2, axis=-1))))


def test_smoothing_cuts_landmark_jitter_by_the_expected_factor():
    rng = np.random.default_rng(0)
    frames = 600
    jittered = _face()[None] + rng.normal(0, 1.5, size=(frames, 68, 2))
    centre, x = quad_axes(jittered)
    cfg = AlignConfig(sigma_centre=1.0, sigma_axes=3.0)
    smooth_centre, smooth_x = smooth_track(centre, cfg.sigma_centre), smooth_track(x, cfg.sigma_axes)
    # expected: ~0.27 for sigma 1, ~0.05 for sigma 3 (continuous limit 0.266 / sigma^1.5)
    for raw, smooth, sigma in ((centre, smooth_centre, 1.0), (x, smooth_x, 3.0)):
        ratio = _motion(smooth) / _motion(raw)
        assert ratio == pytest.approx(_expected_jitter_ratio(sigma), rel=0.15), sigma
    quads_raw = quads_from_axes(centre, x)
    quads = track_quads(jittered, cfg)
    corner_ratio = _motion(quads.reshape(frames, -1)) / _motion(quads_raw.reshape(frames, -1))
    assert corner_ratio < 0.2  # the corners move with both: dominated by the axis jitter that sigma 3 removes


def test_smoothing_keeps_steady_motion_exactly_even_at_the_ends():
    steps = np.arange(30)[:, None, None]
    moving = _face()[None] + steps * np.array([2.0, -1.0])  # 2 px right, 1 px up per frame
    np.testing.assert_allclose(smooth_track(moving, 3.0), moving, atol=1e-9)
    quads = track_quads(moving, AlignConfig())
    np.testing.assert_allclose(quads, quads_from_axes(*quad_axes(moving)), atol=1e-9)


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_smoothing_short_tracks(frames):
    track = np.random.default_rng(1).normal(size=(frames, 2))
    out = smooth_track(track, 3.0)
    assert out.shape == track.shape and np.all(np.isfinite(out))
    np.testing.assert_allclose(out.mean(axis=0), track.mean(axis=0), atol=1.0)
    np.testing.assert_array_equal(smooth_track(track, 0.0), track)
