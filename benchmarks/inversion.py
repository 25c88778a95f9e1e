"""Reconstruction and identity-edit strength per inversion method and N, for the shipped `demo64` model on CPU.

A thin driver of `dva eval` (reconstruction mode, `dva.evaluation.job.run_reconstruction`): the demo's sample clip
of the astronaut is evaluated on its first `--frames` aligned 64 px crops, with the sample clip of Grace Hopper as
`identity_target` (so every x_T is also decoded with her mean z_id and scored by dlib's identity descriptor: cosine
to the target and to the source, TL-ID / TG-ID). Each `--grid METHODS=STEPS` is one evaluation (methods × N), so
the expensive methods need not run at every N. UNet calls are per frame; the cost columns are a first edit's calls
(inversion + one decode) and a further edit's (one decode) relative to DDIM N=100's first edit (2·100−1 = 199).
Seconds are wall time per frame for inversion + one decode (on a shared machine: compare within one run only).

    python benchmarks/inversion.py [--frames 4] [--grid ddim=10,20,50,100 --grid fixed_point:2=10,20 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from dva.evaluation.config import load_eval_config  # noqa: E402
from dva.evaluation.job import run_reconstruction  # noqa: E402
from dva.evaluation.reconstruction import EDIT_METRICS  # noqa: E402
from dva.runtime.eval_results import read_summary  # noqa: E402
from dva.samples import make_sample_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GRIDS = ("ddim=10,20,50,100", "fixed_point:2=10,20")
SOURCE, TARGET = "astronaut", "grace_hopper"
DDIM_100_FIRST_EDIT = 2 * 100 - 1
COLUMNS = ("method", "N", "PSNR", "SSIM", "rel_x0_err", "inv_calls", "dec_calls", "first_edit_%", "further_%",
           "s/frame", "id_cos_target", "id_cos_source", "TL-ID", "TG-ID")


def grid_overrides(grid: str) -> list[str]:
    """`METHODS=STEPS` (e.g. `ddim,fixed_point:2=10,20`) as eval config overrides."""
    methods, _, steps = grid.partition("=")
    if not steps:
        raise SystemExit(f"--grid {grid!r}: expected METHODS=STEPS, e.g. fixed_point:2=10,20")
    return [f"methods=[{methods}]", f"steps=[{steps}]"]


def table_rows(summary: dict) -> list[list[str]]:
    """One printed row per (method, N) of an evaluation summary."""
    rows = []
    for method, table in summary["by_method"].items():
        for n, e in sorted(table.items(), key=lambda item: int(item[0])):
            first, further = e["inversion_calls"] + e["decode_calls"], e["decode_calls"]
            rows.append([method, n, f"{e['psnr']:.2f}", f"{e['ssim']:.4f}", f"{e['rel_x0_error']:.4f}",
                         str(e["inversion_calls"]), str(e["decode_calls"]), f"{100 * first / DDIM_100_FIRST_EDIT:.1f}",
                         f"{100 * further / DDIM_100_FIRST_EDIT:.1f}", f"{e['seconds_per_frame']:.2f}",
                         *("-" if e[k] is None else f"{e[k]:.3f}" for k in EDIT_METRICS)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4, help="crops of the source clip evaluated (and target frames)")
    ap.add_argument("--grid", action="append", help=f"METHODS=STEPS, repeatable (default {' '.join(DEFAULT_GRIDS)})")
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "demo64.safetensors"))
    args = ap.parse_args()
    print(f"# python {' '.join(sys.argv)}")
    print(f"# source {SOURCE}, identity target {TARGET}, {args.frames} frames; torch threads {torch.get_num_threads()}")
    print(" | ".join(COLUMNS), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        clips = {person: make_sample_clip(Path(tmp) / f"{person}.mp4", person, frames=args.frames, size=(384, 288),
                                          blinks=True, seed=seed) for seed, person in enumerate((SOURCE, TARGET))}
        for k, grid in enumerate(args.grid or DEFAULT_GRIDS):
            cfg = load_eval_config("local_tiny", [
                "model_preset=demo64", f"model.checkpoint={args.checkpoint}", "face.align.crop_size=64",
                f"input={clips[SOURCE]}", f"output={tmp}/eval{k}", f"identity_target={clips[TARGET]}",
                f"max_frames={args.frames}", "fail_fast=true", *grid_overrides(grid)])
            for row in table_rows(read_summary(run_reconstruction(cfg))):
                print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
