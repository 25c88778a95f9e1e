"""Reconstruction quality at several DDIM step counts N (SPEC §4): how close invert-then-generate comes back.

Per video: the face front end tracks and crops the face as the edit job does, z_id is the mean over the video's
frames (the job's per-video identity), and each chunk of crops is inverted and regenerated at every N with the
conditioning the job would use. Scores are per frame on [0, 1] images, averaged per (video, N).

SSIM is scored both ways (`dva.metrics.image`): over valid windows (`ssim`, Wang et al.) and zero-padded at the
border (`ssim_zero_padded`), as the paper's evaluation code does; the report puts the latter next to the paper's.

MS-SSIM uses as many of its five scales as the crop allows (the coarsest must still fit the 11-pixel window: 5 at
176 px and up, 2 for the tiny 32 px crops), and the count is recorded with the scores: MS-SSIM numbers are only
comparable at equal scale counts.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Optional, Sequence

import pyarrow as pa
import torch

from dva.diffusion import ddim_generate
from dva.diffusion.inversion import InversionConfig, invert
from dva.errors import DvaError
from dva.face.config import FaceConfig
from dva.face.crop_video import align_video
from dva.face.landmarker import FaceLandmarker
from dva.face.warp import iter_crops
from dva.metrics import lpips_distance, mean_scores, ms_ssim, mse, psnr, ssim
from dva.metrics.image import MS_SSIM_WEIGHTS, WINDOW
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.runtime.inputs import VideoInput
from dva.frontend import VideoTask, encode_codes
from dva.runtime.cluster import on_device
from dva.crops import crops_to_tensor
from dva.video import iter_frames
from dva.video.decode import stack_chunks

METRICS = ("ssim", "ssim_zero_padded", "ms_ssim", "mse", "psnr", "lpips")

SCHEMA = pa.schema([
    ("video", pa.string()),
    ("video_id", pa.string()),
    ("steps", pa.int64()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("frames", pa.int64()),
    *[(name, pa.float64()) for name in METRICS],
    ("ms_ssim_scales", pa.int64()),
    ("lpips_skipped", pa.string()),
    ("unet_calls", pa.int64()),
    ("seconds", pa.float64()),
])


def ms_ssim_scales(side: int) -> int:
    """How many MS-SSIM scales fit an image of this side (each halves it; the last must hold the SSIM window)."""
    return sum(side >> k >= WINDOW for k in range(len(MS_SSIM_WEIGHTS)))


class LpipsScorer:
    """LPIPS when weights are configured; otherwise `skipped` says why, and scoring returns nothing.

    Configured weights are tried once up front, so a wrong file or a missing package stops the run before any
    video is inverted instead of failing every video the same way.
    """

    def __init__(self, weights: Optional[str], device: torch.device):
        self.weights = weights
        self.skipped: Optional[str] = None
        if not weights:
            self.skipped = "no LPIPS weights configured (config key `lpips_weights`)"
            return
        probe = torch.zeros(1, 3, 64, 64, device=device)
        lpips_distance(probe, probe, weights, config_key="lpips_weights")

    def __call__(self, reference: torch.Tensor, output: torch.Tensor) -> Optional[torch.Tensor]:
        if self.skipped:
            return None
        return lpips_distance(reference, output, self.weights, config_key="lpips_weights")


def frame_scores(reference: torch.Tensor, output: torch.Tensor, lpips: LpipsScorer) -> dict[str, torch.Tensor]:
    """Per-frame scores [B] of [0, 1] images; MS-SSIM at the scales the size allows, LPIPS when configured."""
    scales = ms_ssim_scales(min(reference.shape[-2:]))
    if scales == 0:
        raise DvaError(f"crops of {tuple(reference.shape[-2:])} px are smaller than the {WINDOW}-pixel SSIM window")
    scores = {"ssim": ssim(reference, output), "ssim_zero_padded": ssim(reference, output, padding="zeros"),
              "ms_ssim": ms_ssim(reference, output, scales=scales),
              "mse": mse(reference, output), "psnr": psnr(reference, output)}
    distance = lpips(reference, output)
    if distance is not None:
        scores["lpips"] = distance
    return {k: v.cpu() for k, v in scores.items()}


def evaluate_video(
    video: VideoInput,
    model: DiffusionVideoAutoencoder,
    landmarker: FaceLandmarker,
    face: FaceConfig,
    steps: Sequence[int],
    *,
    lpips: LpipsScorer,
    inversion: InversionConfig,
    batch_frames: int = 16,
    max_frames: int = 0,
    device: torch.device = torch.device("cpu"),
    autocast_dtype: Optional[torch.dtype] = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """One row per N (columns of `SCHEMA`) for one video; raises DvaError when its face cannot be tracked."""
    track = align_video(video.uri, landmarker, face)
    task = VideoTask(video.uri, video.key, video.video_id, [])
    z_id, z_lnd = encode_codes(task, track, on_device(model.encode_identity, device),
                               on_device(model.encode_landmarks, device), batch_frames)
    z_id = torch.from_numpy(z_id.mean(axis=0)).to(device)
    crops = iter_crops(iter_frames(video.uri), track.quads, track.crop_size)
    if max_frames:
        crops = itertools.islice(crops, max_frames)
    per_steps: dict[int, list[dict[str, torch.Tensor]]] = {n: [] for n in steps}
    seconds = dict.fromkeys(steps, 0.0)
    start = 0
    for chunk in stack_chunks(crops, batch_frames):
        x0 = crops_to_tensor(chunk).to(device)
        with torch.no_grad():
            cond = model.face_code(z_id[None], torch.from_numpy(z_lnd[start:start + len(chunk)]).to(device))
        for n in steps:
            began = time.perf_counter()
            x_T = invert(inversion, model, x0, cond, n, autocast_dtype=autocast_dtype)
            out = ddim_generate(model, x_T, cond, n, autocast_dtype=autocast_dtype)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[n] += time.perf_counter() - began
            per_steps[n].append(frame_scores((x0 + 1) / 2, (out.clamp(-1, 1) + 1) / 2, lpips))
        start += len(chunk)
        log(f"{video.uri}: {start} frames")
    rows = []
    for n in steps:
        means = mean_scores(per_steps[n])
        rows.append({"video": video.uri, "video_id": video.video_id, "steps": n, "status": "ok", "frames": start,
                     **{k: means.get(k) for k in METRICS}, "ms_ssim_scales": ms_ssim_scales(track.crop_size),
                     "lpips_skipped": lpips.skipped, "unet_calls": (inversion.inversion_calls(n) + n) * start, "seconds": seconds[n]})
    return rows


def failed_rows(video: VideoInput, steps: Sequence[int], error: str) -> list[dict]:
    """The rows of a video that could not be evaluated: one per N, so every (video, N) has its row."""
    return [{"video": video.uri, "video_id": video.video_id, "steps": n, "status": "failed", "error": error}
            for n in steps]


def summarise(rows: list[dict], steps: Sequence[int]) -> dict[str, dict]:
    """Per N: frame-weighted means over the videos that succeeded, frames, videos and seconds per frame."""
    out = {}
    for n in steps:
        ok = [r for r in rows if r["steps"] == n and r["status"] == "ok" and r["frames"]]
        frames = sum(r["frames"] for r in ok)
        entry: dict = {"videos": len(ok), "frames": frames}
        for k in METRICS:
            known = [r for r in ok if r.get(k) is not None]
            weight = sum(r["frames"] for r in known)
            entry[k] = sum(r[k] * r["frames"] for r in known) / weight if weight else None
        entry["seconds_per_frame"] = sum(r["seconds"] for r in ok) / frames if frames else None
        out[str(n)] = entry
    return out


def falls_with_steps(summary: dict[str, dict], metric: str = "mse") -> bool:
    """Whether `metric` (an error) strictly falls as N grows: the sanity check that the model's ε means something."""
    values = [summary[n][metric] for n in sorted(summary, key=int) if summary[n][metric] is not None]
    return len(values) >= 2 and all(a > b for a, b in zip(values, values[1:]))

