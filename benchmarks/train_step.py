"""Training throughput of one worker: samples/s and peak memory of `train_step` for a train config (no Ray).

    python benchmarks/train_step.py --config tiny_cpu
    python benchmarks/train_step.py --config dva256_8gpu --device cuda

The batch is the config's per-worker batch (data.videos_per_step x data.frames_per_video frames) of random crops,
masks and z codes. The job reads z codes from its shards, so the frozen encoders never run in a step: they are
replaced by random ones of the same sizes here, and no weight file is needed. A step runs the UNet on 2 x batch
images (two noises per sample, SPEC §1.4): forward + backward ≈ 3 forwards.
"""

from __future__ import annotations

import argparse
import time

import torch
from unet_throughput import peak_memory_mb  # benchmarks/ is on sys.path when this runs as a script

from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.unet import count_gflops
from dva.models.config import EncoderConfig
from dva.precision import autocast_dtype
from dva.train.config import load_train_config
from dva.train.loop import create_train_state, train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny_cpu", help="train preset or YAML (default: tiny_cpu)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("overrides", nargs="*", help="key=value train-config overrides, e.g. data.frames_per_video=8")
    args = ap.parse_args()

    cfg = load_train_config(args.config, ["data.path=unused", "storage_path=unused", *args.overrides])
    m = cfg.model
    m.identity_encoder = EncoderConfig(kind="random", dim=m.identity_encoder.dim)
    m.landmark_encoder = EncoderConfig(kind="random", dim=m.landmark_encoder.dim)
    m.face_parser = None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    params, gflops = count_gflops(m)
    batch_size = cfg.data.videos_per_step * cfg.data.frames_per_video
    torch.manual_seed(cfg.seed)
    state = create_train_state(DiffusionVideoAutoencoder(m).to(device), cfg.optim)
    s = m.unet.image_size
    batch = {"images": torch.rand(batch_size, 3, s, s, device=device) * 2 - 1,
             "mask": (torch.rand(batch_size, 1, s, s, device=device) > 0.5).float(),
             "z_id": torch.randn(batch_size, m.identity_encoder.dim, device=device),
             "z_lnd": torch.rand(batch_size, m.landmark_encoder.dim, device=device)}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        train_step(state, batch)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(state, batch)
    sync()
    elapsed = time.perf_counter() - start
    dtype = autocast_dtype(cfg.optim.amp, device)
    print(f"model {m.name}: {params / 1e6:.3f} M UNet parameters, {gflops:.1f} GFLOPs per {s}² forward")
    print(f"device {device} amp {dtype or 'fp32'} batch {batch_size} per worker "
          f"({cfg.data.videos_per_step} videos x {cfg.data.frames_per_video} frames), {args.steps} steps")
    print(f"train step: {args.steps * batch_size / elapsed:.2f} samples/s per worker, {elapsed / args.steps * 1e3:.1f} "
          f"ms/step, {3 * 2 * batch_size * gflops * args.steps / elapsed / 1e3:.2f} TFLOP/s achieved")
    print(f"peak memory: {peak_memory_mb(device):.0f} MiB")


if __name__ == "__main__":
    main()
