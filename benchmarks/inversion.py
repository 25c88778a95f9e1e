"""Reconstruction and identity-edit strength per inversion method and N, for the shipped `demo64` model on CPU.

For each of the demo's two sample people (dva.samples, dlib front end), the first `--frames` aligned crops are
inverted once per (method, N) and decoded twice: with their own code (reconstruction: PSNR, SSIM, relative x0 error
‖x̂0 − x0‖/‖x0‖) and with the other person's mean identity code (an identity edit: cosine of the edited crops' dlib
identity to the target's and to the source's mean identity). UNet calls are per frame; seconds are process CPU
time per frame for inversion + the reconstruction decode (the machine is shared, so wall time would mislead).
The cost column is the first edit's calls (inversion + one decode) relative to DDIM at N=100 (2·100−1 = 199).

    python benchmarks/inversion.py [--frames 4] [--cases ddim:10,ddim:20,ddim:50,ddim:100,fixed_point:20:2 ...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dva.config import load_config  # noqa: E402
from dva.crops import crops_to_tensor  # noqa: E402
from dva.diffusion import ddim_generate  # noqa: E402
from dva.diffusion.inversion import InversionConfig, invert  # noqa: E402
from dva.face.config import load_face_config  # noqa: E402
from dva.face.crop_video import align_video  # noqa: E402
from dva.face.landmarker import build_landmarker  # noqa: E402
from dva.face.warp import iter_crops  # noqa: E402
from dva.metrics import psnr, ssim  # noqa: E402
from dva.runtime.weights import load_model  # noqa: E402
from dva.models.config import ModelConfig  # noqa: E402
from dva.samples import make_sample_clip  # noqa: E402
from dva.video import iter_frames  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASES = ("ddim:10,ddim:20,ddim:50,ddim:100,fixed_point:10:2,fixed_point:20:1,fixed_point:20:2,"
                 "fixed_point:20:3")
PEOPLE = ("astronaut", "grace_hopper")


def parse_case(text: str) -> tuple[InversionConfig, int]:
    method, n, *iterations = text.split(":")
    cfg = InversionConfig(method, int(iterations[0]) if iterations else InversionConfig.iterations)
    cfg.validate("--cases ")
    return cfg, int(n)


def sample_crops(person: str, frames: int, folder: Path, seed: int) -> torch.Tensor:
    """The first `frames` 64-px aligned crops of the demo's sample clip of `person`."""
    clip = make_sample_clip(folder / f"{person}.mp4", person, frames=frames, size=(384, 288), blinks=True, seed=seed)
    face = load_face_config("dlib", ["align.crop_size=64"])
    track = align_video(clip, build_landmarker(face), face)
    return crops_to_tensor(np.stack(list(itertools.islice(iter_crops(iter_frames(clip), track.quads, 64), frames))))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b[None].expand_as(a), dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4, help="crops per sample person")
    ap.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated method:N[:iterations]")
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "demo64.safetensors"))
    args = ap.parse_args()
    cases = [parse_case(c) for c in args.cases.split(",")]
    torch.manual_seed(0)
    model = load_model(load_config(ModelConfig, "demo64", [f"checkpoint={args.checkpoint}"], group="model"))
    with tempfile.TemporaryDirectory() as tmp:
        crops = {p: sample_crops(p, args.frames, Path(tmp), seed) for seed, p in enumerate(PEOPLE)}
    with torch.no_grad():
        z_id = {p: model.encode_identity(x) for p, x in crops.items()}
        z_lnd = {p: model.encode_landmarks(x) for p, x in crops.items()}
        mean_id = {p: z.mean(0) for p, z in z_id.items()}
        own = {p: model.face_code(mean_id[p][None], z_lnd[p]) for p in PEOPLE}
        swapped = {p: model.face_code(mean_id[q][None], z_lnd[p]) for p, q in zip(PEOPLE, PEOPLE[::-1])}

    header = ("method", "N", "PSNR", "SSIM", "rel_x0_err", "inv_calls", "dec_calls", "first_edit_%", "further_%",
              "cpu_s/frame", "id_cos_target", "id_cos_source")
    print(f"# {' '.join(sys.argv)}  ({args.frames} frames per person, {', '.join(PEOPLE)}; torch threads "
          f"{torch.get_num_threads()})")
    print(" | ".join(header))
    for cfg, n in cases:
        scores = {k: [] for k in ("psnr", "ssim", "err", "target", "source")}
        cpu = 0.0
        for source, target in zip(PEOPLE, PEOPLE[::-1]):
            x0 = crops[source]
            began = time.process_time()
            x_T = invert(cfg, model, x0, own[source], n)
            out = ddim_generate(model, x_T, own[source], n)
            cpu += time.process_time() - began
            edited = ddim_generate(model, x_T, swapped[source], n)
            a, b = (x0 + 1) / 2, (out + 1) / 2
            scores["psnr"].append(psnr(a, b))
            scores["ssim"].append(ssim(a, b))
            scores["err"].append(((out - x0).flatten(1).norm(dim=1) / x0.flatten(1).norm(dim=1)))
            identity = model.encode_identity(edited)
            scores["target"].append(cosine(identity, mean_id[target]))
            scores["source"].append(cosine(identity, mean_id[source]))
        means = {k: torch.cat(v).mean().item() for k, v in scores.items()}
        inv = cfg.inversion_calls(n)
        frames = sum(len(x) for x in crops.values())
        print(" | ".join([cfg.label, str(n), f"{means['psnr']:.2f}", f"{means['ssim']:.4f}", f"{means['err']:.4f}",
                          str(inv), str(n), f"{100 * (inv + n) / 199:.1f}", f"{100 * n / 199:.1f}",
                          f"{cpu / frames:.2f}", f"{means['target']:.3f}", f"{means['source']:.3f}"]), flush=True)


if __name__ == "__main__":
    main()
