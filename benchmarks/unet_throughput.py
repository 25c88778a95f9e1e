"""UNet size and speed: parameters, GFLOPs per forward (counted), invert+generate frames/s, peak memory.

    python benchmarks/unet_throughput.py --model tiny --steps 10 --batch 4
    python benchmarks/unet_throughput.py --model dva256 --steps 20 --batch 16 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from dva.config import load_config
from dva.diffusion import ddim_generate, ddim_invert
from dva.models.config import ModelConfig
from dva.models.unet import UNet, count_gflops
from dva.precision import PRECISIONS, autocast_dtype


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="model preset or YAML (default: tiny)")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps N (invert N-1 + generate N calls)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()

    cfg = load_config(ModelConfig, args.model, group="model")
    params, gflops = count_gflops(cfg)
    print(f"model {cfg.name}: {params / 1e6:.3f} M UNet parameters, {gflops:.1f} GFLOPs per {cfg.unet.image_size}² forward")

    device = torch.device(args.device)
    torch.manual_seed(0)
    unet = UNet(cfg.unet).to(device).eval()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    unet = unet.to(memory_format=fmt)
    dtype = autocast_dtype(args.precision, device)
    s = cfg.unet.image_size
    x0 = (torch.rand(args.batch, 3, s, s, device=device) * 2 - 1).to(memory_format=fmt)
    z = torch.randn(args.batch, cfg.z_face_dim, device=device)

    def run() -> None:
        ddim_generate(unet, ddim_invert(unet, x0, z, args.steps, autocast_dtype=dtype), z, args.steps,
                      autocast_dtype=dtype)

    run()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    frames = args.batch * args.repeats
    calls = 2 * args.steps - 1
    print(f"device {device} precision {args.precision} batch {args.batch} N={args.steps} ({calls} UNet calls/frame)")
    print(f"invert+generate: {frames / elapsed:.3f} frames/s, {elapsed / frames:.3f} s/frame, "
          f"{frames * calls * gflops / elapsed / 1e3:.2f} TFLOP/s achieved")
    print(f"peak memory: {peak_memory_mb(device):.0f} MiB")


if __name__ == "__main__":
    main()
