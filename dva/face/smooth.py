"""Gaussian smoothing of per-frame tracks along time.

The ends are padded by odd reflection (2*x[0] - x[k]), so a face moving steadily at the start or end of a clip is
not pulled back towards where it was: linear motion passes through unchanged, only jitter is removed.
"""

from __future__ import annotations

import numpy as np


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised samples of a Gaussian out to 4 sigma."""
    radius = max(1, int(4 * sigma + 0.5))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return taps / taps.sum()


def smooth_track(track: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth `track` [N, ...] along axis 0 with a Gaussian of `sigma` frames (0 = unchanged)."""
    track = np.asarray(track, dtype=np.float64)
    if sigma <= 0 or len(track) < 2:
        return track.copy()
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    pad = [(radius, radius)] + [(0, 0)] * (track.ndim - 1)
    padded = np.pad(track, pad, mode="reflect", reflect_type="odd")
    n = len(track)
    return sum(weight * padded[k : k + n] for k, weight in enumerate(kernel))
