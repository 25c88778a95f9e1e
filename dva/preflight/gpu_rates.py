"""Measured UNet throughput on one H200, the basis of the plan's GPU-hour estimate.

Source: benchmarks/results/gpu_suite_h200_2026-11-26.txt, `sampling` rows (benchmarks/gpu_suite.py): dva256
(771.0 GFLOP per 256² forward), bf16 autocast, channels_last, torch.compile, 32 frames per batch; frames/s of a
first edit, i.e. inversion (N−1 UNet calls per frame) plus one generation (N calls).
"""

from __future__ import annotations

SOURCE = "benchmarks/results/gpu_suite_h200_2026-11-26.txt"
GPU = "H200"
MEASURED_MODEL = "dva256"
MEASURED_GFLOP = 771.0
# DDIM steps N → first-edit frames/s per GPU.
FIRST_EDIT_FRAMES_PER_S = {20: 9.328, 50: 3.667, 100: 1.819}


def seconds_per_unet_call(steps: int, gflop_per_forward: float = MEASURED_GFLOP) -> float:
    """GPU seconds of one UNet call on one frame at N = `steps`, for a UNet of `gflop_per_forward`.

    The table's rate per call (frames/s × (2N−1) calls per frame: 2.75-2.76 ms at every N measured) is interpolated
    linearly in N and held constant outside 20-100, then scaled by the model's GFLOP per forward. That scaling is
    right for models near dva256's size; small models (tiny, demo64) do not fill an H200, so their estimate is a
    lower bound.
    """
    per_call = {n: 1.0 / (fps * (2 * n - 1)) for n, fps in FIRST_EDIT_FRAMES_PER_S.items()}
    points = sorted(per_call)
    if steps <= points[0]:
        seconds = per_call[points[0]]
    elif steps >= points[-1]:
        seconds = per_call[points[-1]]
    else:
        hi = next(n for n in points if n >= steps)
        lo = max(n for n in points if n < steps)
        w = (steps - lo) / (hi - lo)
        seconds = per_call[lo] * (1 - w) + per_call[hi] * w
    return seconds * gflop_per_forward / MEASURED_GFLOP
