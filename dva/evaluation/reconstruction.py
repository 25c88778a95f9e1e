"""Reconstruction quality per inversion method and DDIM step count N (SPEC §4, issue 18): how close
invert-then-generate comes back, what it costs, and whether an edit decoded from the same x_T still takes.

Per video: the face front end tracks and crops the face as the edit job does, z_id is the mean over the video's
frames (the job's per-video identity), and each chunk of crops is inverted by every method at every N and
regenerated with the conditioning the job would use. Scores are per frame on [0, 1] images (the relative x0 error
‖x̂0 − x0‖/‖x0‖ on the model's [−1, 1] scale), averaged per (video, method, N). UNet calls are per frame: a first
edit costs inversion + one decode, a further edit one decode.

With an identity target (`IdentityEdit`), the same x_T is also decoded with the target's mean z_id, and the
evaluation's identity network scores the edited crops: cosine to the target's mean embedding and to the source's,
and TL-ID / TG-ID against the source crops (`dva.metrics.identity_consistency`, on aligned crops; no paste). A
method that reconstructs well but holds x_T too tightly to the source shows here as a lower target cosine.

SSIM is scored both ways (`dva.metrics.image`): over valid windows (`ssim`, Wang et al.) and zero-padded at the
border (`ssim_zero_padded`), as the paper's evaluation code does; the report puts the latter next to the paper's.

MS-SSIM uses as many of its five scales as the crop allows (the coarsest must still fit the 11-pixel window: 5 at
176 px and up, 2 for the tiny 32 px crops), and the count is recorded with the scores: MS-SSIM numbers are only
comparable at equal scale counts.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pyarrow as pa
import torch

from dva.diffusion import ddim_generate
from dva.diffusion.inversion import InversionConfig, invert
from dva.errors import ConfigError, DvaError
from dva.evaluation.consistency import Embed
from dva.face.config import FaceConfig
from dva.face.crop_video import align_video
from dva.face.landmarker import FaceLandmarker
from dva.face.warp import iter_crops
from dva.metrics import identity_consistency, lpips_distance, mean_scores, ms_ssim, mse, psnr, ssim
from dva.metrics.image import MS_SSIM_WEIGHTS, WINDOW
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.runtime.inputs import VideoInput
from dva.frontend import encode_face_codes
from dva.runtime.cluster import on_device
from dva.crops import crops_to_tensor
from dva.video import iter_frames
from dva.video.decode import stack_chunks

METRICS = ("ssim", "ssim_zero_padded", "ms_ssim", "mse", "psnr", "lpips", "rel_x0_error")
EDIT_METRICS = ("id_cos_target", "id_cos_source", "tl_id", "tg_id")  # with `identity_target` only

SCHEMA = pa.schema([
    ("video", pa.string()),
    ("video_id", pa.string()),
    ("inversion", pa.string()),  # the method's label, e.g. ddim, fixed_point×2
    ("steps", pa.int64()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("frames", pa.int64()),
    *[(name, pa.float64()) for name in METRICS],
    ("ms_ssim_scales", pa.int64()),
    ("lpips_skipped", pa.string()),
    ("inversion_calls", pa.int64()),  # UNet calls per frame to invert
    ("decode_calls", pa.int64()),  # UNet calls per frame for one decode (a further edit)
    ("unet_calls", pa.int64()),  # in all: inversion + the reconstruction's decode, every frame
    ("seconds", pa.float64()),
    *[(name, pa.float64()) for name in EDIT_METRICS],
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


def relative_x0_error(x0: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """‖x̂0 − x0‖ / ‖x0‖ per frame [B], on the model's [−1, 1] scale."""
    return (out.float() - x0.float()).flatten(1).norm(dim=1).cpu() / x0.float().flatten(1).norm(dim=1).cpu()


@dataclass
class IdentityEdit:
    """An identity edit scored beside each reconstruction: the target's mean z_id (the model's encoder) decodes the
    source's x_T; `embed` (the evaluation's identity network, on `crop_size` px crops) judges the result against
    `target_embedding`, the target's mean embedding."""

    z_id: torch.Tensor  # [D] on the model's device
    target_embedding: torch.Tensor  # [E]
    embed: Embed
    crop_size: int

    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return embed_crops(self.embed, images, self.crop_size)


def embed_crops(embed: Embed, images: torch.Tensor, crop_size: int) -> torch.Tensor:
    """[B, E] identity embeddings of crops in [−1, 1] at the model's size, resized to the network's `crop_size`."""
    resized = torch.nn.functional.interpolate(images.float().clamp(-1, 1), size=crop_size, mode="bilinear",
                                              align_corners=False, antialias=True)
    return embed(resized.cpu())


def identity_edit(uri: str, model: DiffusionVideoAutoencoder, landmarker: FaceLandmarker, face: FaceConfig,
                  embed: Embed, *, crop_size: int, batch_frames: int = 16,
                  device: torch.device = torch.device("cpu")) -> IdentityEdit:
    """The identity edit towards the face of the video `uri` (config key `identity_target`), over all its frames."""
    try:
        track = align_video(uri, landmarker, face)
    except DvaError as err:
        raise ConfigError(f"config key `identity_target`: {err}") from None
    z_id, embedded = [], []
    for chunk in stack_chunks(iter_crops(iter_frames(uri), track.quads, track.crop_size), batch_frames):
        images = crops_to_tensor(chunk)
        with torch.no_grad():
            z_id.append(model.encode_identity(images.to(device)).float())
        embedded.append(embed_crops(embed, images, crop_size))
    return IdentityEdit(torch.cat(z_id).mean(0), torch.cat(embedded).mean(0), embed, crop_size)


def _cosines(embeddings: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(embeddings.double(), reference.double()[None], dim=1)


def edit_strength(source: torch.Tensor, edited: torch.Tensor, target: torch.Tensor) -> dict[str, Optional[float]]:
    """Of per-frame identity embeddings [N, E] of the source crops and their identity edit, and the target's [E]:
    mean cosine of the edit to the target and to the source's mean, and TL-ID / TG-ID (None under 2 frames)."""
    scores: dict[str, Optional[float]] = {"id_cos_target": _cosines(edited, target).mean().item(),
                                          "id_cos_source": _cosines(edited, source.mean(0)).mean().item(),
                                          "tl_id": None, "tg_id": None}
    if len(source) >= 2:
        consistency = identity_consistency(source, edited)
        scores.update(tl_id=consistency.tl_id, tg_id=consistency.tg_id)
    return scores


def evaluate_video(
    video: VideoInput,
    model: DiffusionVideoAutoencoder,
    landmarker: FaceLandmarker,
    face: FaceConfig,
    steps: Sequence[int],
    *,
    lpips: LpipsScorer,
    inversions: Sequence[InversionConfig],
    identity: Optional[IdentityEdit] = None,
    batch_frames: int = 16,
    max_frames: int = 0,
    device: torch.device = torch.device("cpu"),
    autocast_dtype: Optional[torch.dtype] = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """One row per (inversion method, N) (columns of `SCHEMA`) for one video; raises DvaError when its face cannot
    be tracked. Seconds are inversion + the reconstruction's decode; the identity edit's decode is not counted."""
    track = align_video(video.uri, landmarker, face)
    [(z_id, z_lnd)] = encode_face_codes(video.uri, [track], on_device(model.encode_identity, device),
                                        on_device(model.encode_landmarks, device), batch_frames)
    z_id = torch.from_numpy(z_id.mean(axis=0)).to(device)
    face = track.face_frames  # the frames with the face: z_lnd starts at the first of them
    crops = iter_crops(itertools.islice(iter_frames(video.uri), face.start, face.stop),
                       track.quads[face.start:face.stop], track.crop_size)
    if max_frames:
        crops = itertools.islice(crops, max_frames)
    cases = [(i, n) for i in range(len(inversions)) for n in steps]  # (index into `inversions`, N)
    scores: dict[tuple, list[dict[str, torch.Tensor]]] = {case: [] for case in cases}
    seconds = dict.fromkeys(cases, 0.0)
    source_embeddings: list[torch.Tensor] = []
    edited_embeddings: dict[tuple, list[torch.Tensor]] = {case: [] for case in cases}
    start = 0
    for chunk in stack_chunks(crops, batch_frames):
        x0 = crops_to_tensor(chunk).to(device)
        z_lnd_chunk = torch.from_numpy(z_lnd[start:start + len(chunk)]).to(device)
        with torch.no_grad():
            cond = model.face_code(z_id[None], z_lnd_chunk)
            edit_cond = None if identity is None else model.face_code(identity.z_id[None].to(device), z_lnd_chunk)
        if identity is not None:
            source_embeddings.append(identity.embeddings(x0))
        for case in cases:
            inversion, n = inversions[case[0]], case[1]
            began = time.perf_counter()
            x_T = invert(inversion, model, x0, cond, n, autocast_dtype=autocast_dtype)
            out = ddim_generate(model, x_T, cond, n, autocast_dtype=autocast_dtype)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[case] += time.perf_counter() - began
            scores[case].append({**frame_scores((x0 + 1) / 2, (out.clamp(-1, 1) + 1) / 2, lpips),
                                 "rel_x0_error": relative_x0_error(x0, out)})
            if identity is not None:
                edited = ddim_generate(model, x_T, edit_cond, n, autocast_dtype=autocast_dtype)
                edited_embeddings[case].append(identity.embeddings(edited))
        start += len(chunk)
        log(f"{video.uri}: {start} frames")
    rows = []
    for case in cases:
        inversion, n = inversions[case[0]], case[1]
        means = mean_scores(scores[case])
        strength = {} if identity is None else edit_strength(
            torch.cat(source_embeddings), torch.cat(edited_embeddings[case]), identity.target_embedding)
        rows.append({"video": video.uri, "video_id": video.video_id, "inversion": inversion.label, "steps": n,
                     "status": "ok", "frames": start, **{k: means.get(k) for k in METRICS},
                     "ms_ssim_scales": ms_ssim_scales(track.crop_size), "lpips_skipped": lpips.skipped,
                     "inversion_calls": inversion.inversion_calls(n), "decode_calls": n,
                     "unet_calls": (inversion.inversion_calls(n) + n) * start, "seconds": seconds[case],
                     **{k: strength.get(k) for k in EDIT_METRICS}})
    return rows


def failed_rows(video: VideoInput, inversions: Sequence[InversionConfig], steps: Sequence[int],
                error: str) -> list[dict]:
    """The rows of a video that could not be evaluated: one per (method, N), so every one has its row."""
    return [{"video": video.uri, "video_id": video.video_id, "inversion": inversion.label, "steps": n,
             "status": "failed", "error": error} for inversion in inversions for n in steps]


def summarise(rows: list[dict], inversions: Sequence[InversionConfig], steps: Sequence[int]) -> dict[str, dict]:
    """Per method label, then per N: frame-weighted means over the videos that succeeded, frames, videos, UNet calls
    per frame (inversion, one decode) and seconds per frame."""
    out: dict[str, dict] = {}
    for inversion in inversions:
        table = out.setdefault(inversion.label, {})
        for n in steps:
            ok = [r for r in rows if (r["inversion"], r["steps"]) == (inversion.label, n) and r["status"] == "ok"
                  and r["frames"]]
            frames = sum(r["frames"] for r in ok)
            entry: dict = {"videos": len(ok), "frames": frames}
            for k in (*METRICS, *EDIT_METRICS):
                known = [r for r in ok if r.get(k) is not None]
                weight = sum(r["frames"] for r in known)
                entry[k] = sum(r[k] * r["frames"] for r in known) / weight if weight else None
            entry["inversion_calls"], entry["decode_calls"] = inversion.inversion_calls(n), n
            entry["seconds_per_frame"] = sum(r["seconds"] for r in ok) / frames if frames else None
            table[str(n)] = entry
    return out


def falls_with_steps(summary: dict[str, dict], metric: str = "mse") -> bool:
    """Whether `metric` (an error) strictly falls as N grows: the sanity check that the model's ε means something."""
    values = [summary[n][metric] for n in sorted(summary, key=int) if summary[n][metric] is not None]
    return len(values) >= 2 and all(a > b for a, b in zip(values, values[1:]))

