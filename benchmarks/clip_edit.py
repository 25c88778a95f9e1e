"""Seconds per iteration of the CLIP-direction optimisation (SPEC §3.6).

One iteration = one batched UNet forward and backward over the stored DDIM states of each chosen frame (5 per frame
on the 5-step schedule), the DDIM step, and the CLIP image encoder on the results.

    python benchmarks/clip_edit.py                                    # tiny DVA + tiny CLIP on the CPU
    python benchmarks/clip_edit.py --model dva256 --clip ViT-B-16     # the paper's setting, on the GPU if present
    python benchmarks/clip_edit.py --model dva256 --precision bf16 --frames 2

Weights are random (the architecture sets the cost) and nothing is read or downloaded: the identity and landmark
encoders are the seeded random stand-ins with the preset's dims, CLIP is open_clip's architecture with
pretrained=None. The paper's 2000 iterations cost 2000 × the figure printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from dva.config import load_config  # noqa: E402
from dva.editing.clip_direction import (  # noqa: E402
    CLIP_PRECISIONS,
    TINY_CLIP,
    ClipDirectionalLoss,
    ClipEditConfig,
    optimise_clip_direction,
    register_tiny_clip,
)
from dva.models.autoencoder import DiffusionVideoAutoencoder  # noqa: E402
from dva.models.config import ModelConfig  # noqa: E402

RANDOM_ENCODERS = ["identity_encoder.kind=random", "identity_encoder.weights=null", "identity_encoder.sha256=null",
                   "landmark_encoder.kind=random", "landmark_encoder.weights=null", "landmark_encoder.sha256=null",
                   "checkpoint=null"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="model preset (configs/model) or YAML path")
    ap.add_argument("--clip", default=None, help=f"open_clip architecture (default: {TINY_CLIP} for tiny, else "
                                                 "ViT-B-16)")
    ap.add_argument("--frames", type=int, default=1, help="frames optimised together (batch = 5 × frames)")
    ap.add_argument("--iterations", type=int, default=10, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first (at least 1)")
    ap.add_argument("--precision", default="fp32", choices=CLIP_PRECISIONS)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.warmup < 1 or args.iterations < 1:
        ap.error("--warmup and --iterations must be at least 1")

    clip_name = args.clip or (TINY_CLIP if args.model == "tiny" else "ViT-B-16")
    device = torch.device(args.device)
    model_cfg = load_config(ModelConfig, args.model, RANDOM_ENCODERS, group="model")
    torch.manual_seed(0)
    model = DiffusionVideoAutoencoder(model_cfg).to(device).eval()

    import open_clip

    if clip_name == TINY_CLIP:
        register_tiny_clip()
    cfg = ClipEditConfig(iterations=args.warmup + args.iterations, frames=list(range(args.frames)),
                         precision=args.precision)
    clip_model, _, _ = open_clip.create_model_and_transforms(clip_name, pretrained=None, device=device)
    clip = ClipDirectionalLoss(clip_model, open_clip.get_tokenizer(clip_name), cfg.templates).to(device)

    size = model.image_size
    frames = torch.rand(args.frames, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stamps = []
    start = time.perf_counter()
    # on_iteration receives the losses as floats, which waits for the device: each stamp ends an iteration.
    optimise_clip_direction(model, frames, "face", "face with beard", cfg, clip=clip,
                            on_iteration=lambda i, losses: stamps.append(time.perf_counter()))
    per_iteration = [b - a for a, b in zip(stamps[args.warmup - 1:], stamps[args.warmup:])]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    n_unet = sum(p.numel() for p in model.unet.parameters()) / 1e6
    print(f"model {args.model} ({n_unet:.1f} M UNet params, {size}²) + CLIP {clip_name} on {where}, {args.precision}, "
          f"{args.frames} frame(s) → batch {5 * args.frames}")
    print(f"setup + first iteration: {stamps[0] - start:.3f} s (encode, invert, regenerate, text direction)")
    print(f"seconds per iteration: median {statistics.median(per_iteration):.4f}, "
          f"min {min(per_iteration):.4f}, over {len(per_iteration)} iterations after {args.warmup} warm-up")
    print(f"the paper's 2000 iterations ≈ {statistics.median(per_iteration) * 2000 / 60:.1f} min")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
