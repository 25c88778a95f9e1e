"""The plan of a job: frames from container metadata, UNet calls, and GPU time from the measured rate table."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from dva.preflight import gpu_rates
from dva.preflight.report import describe_error

PROBE_THREADS = 16  # probes wait on storage, not on the CPU


def frame_counts(uris: Sequence[str]) -> dict[str, int | str]:
    """Frames of each video from its container header (`dva.video.decode.probe`: the header and one decoded
    frame), or the reason it cannot be read. A container that does not state its frame count gives
    duration × frame rate."""
    from dva.video.decode import probe

    def count(uri: str) -> int | str:
        try:
            info = probe(uri)
        except Exception as err:  # the job records such a video as failed; the plan says which and why
            return describe_error(err)
        if info.num_frames:
            return info.num_frames
        return round(info.duration * info.fps) if info.duration else "the container states no frame count"

    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        return dict(zip(uris, pool.map(count, uris)))


def unet_calls_per_frame(steps: int, edits: int, has_x_T: bool) -> int:
    """UNet calls per frame of one video: inversion N−1 unless x_T is stored, then N per edit (the first edit of a
    new video therefore 2N−1, each further one N); encode only (no edits) is the inversion alone."""
    return (0 if has_x_T else steps - 1) + steps * edits


def describe_gpu_hours(calls_by_steps: dict[int, int], gflop_per_forward: float, model: str) -> str:
    """'≈ X H200-hours' for `calls_by_steps` UNet calls at each N, from the measured rate table."""
    seconds = sum(calls * gpu_rates.seconds_per_unet_call(n, gflop_per_forward) for n, calls in calls_by_steps.items())
    scaled = ("" if model == gpu_rates.MEASURED_MODEL else
              f"; scaled from {gpu_rates.MEASURED_MODEL} by GFLOP per forward ({gflop_per_forward:.3g} vs "
              f"{gpu_rates.MEASURED_GFLOP:g}): a small model fills a GPU less, so a lower bound")
    hours = seconds >= 360  # from a tenth of an hour on; shorter plans in seconds
    amount = f"{seconds / 3600:,.1f} {gpu_rates.GPU}-hours" if hours else f"{seconds:,.3g} {gpu_rates.GPU}-seconds"
    return f"≈ {amount} (bf16, compiled, 32-frame batches: {gpu_rates.SOURCE}{scaled})"
