"""`dva eval`: reconstruction quality of a model on videos, or temporal consistency of an edit job's outputs.

    dva eval --config local_tiny mode=reconstruction input=clips/ output=out/eval model.checkpoint=… steps=[20,100]
    dva eval --config local_tiny mode=edit input=out/edit          # results under out/edit/eval/edit/

Single process: videos are evaluated one after another (on the GPU when there is one). Results are Parquet tables
and a summary.json under `<output>/eval/<mode>/` (local or s3://); `dva report` shows them.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Optional

from dva.errors import DvaError
from dva.evaluation import consistency, paper, reconstruction
from dva.evaluation.config import EvalConfig, load_eval_config
from dva.evaluation.results import eval_prefix, write_summary, write_table
from dva.runtime.cluster import configured_device
from dva.storage import join, redact

log = logging.getLogger("dva.eval")


def run_reconstruction(cfg: EvalConfig) -> str:
    """Evaluate every input video at every N; write the tables and summary; return the summary's URI."""
    from dva.face.landmarker import build_landmarker
    from dva.models.checkpoint import load_model
    from dva.runtime.inputs import discover_inputs
    from dva.precision import autocast_dtype

    device = configured_device(cfg.device)
    steps = sorted(set(cfg.steps))
    lpips = reconstruction.LpipsScorer(cfg.lpips_weights, device)  # a bad weights file fails here, before any work
    videos = discover_inputs(cfg.input)
    model = load_model(cfg.model, device)
    landmarker = build_landmarker(cfg.face)
    rows = []
    for video in videos:
        try:
            rows += reconstruction.evaluate_video(
                video, model, landmarker, cfg.face, steps, lpips=lpips, inversion=cfg.inversion,
                batch_frames=cfg.batch_frames,
                max_frames=cfg.max_frames, device=device, autocast_dtype=autocast_dtype(cfg.precision, device),
                log=log.debug)
        except Exception as err:  # recorded per video; the evaluation goes on
            if cfg.fail_fast:
                raise
            message = redact(str(err) if isinstance(err, DvaError) else f"{type(err).__name__}: {err}")
            rows += reconstruction.failed_rows(video, steps, message)
            log.info("FAILED %s: %s", redact(video.uri), message)
            continue
        log.info("%s: %s", redact(video.uri), ", ".join(f"N={r['steps']} MSE {r['mse']:.4g} SSIM {r['ssim']:.3f}"
                                                        for r in rows[-len(steps):]))
    prefix = eval_prefix(cfg.output_prefix, "reconstruction")
    write_table(join(prefix, "results.parquet"), rows, reconstruction.SCHEMA)
    by_steps = reconstruction.summarise(rows, steps)
    return write_summary(prefix, {
        "mode": "reconstruction", "input": redact(cfg.input), "results": "results.parquet",
        "model": {"name": cfg.model.name, "checkpoint": redact(cfg.model.checkpoint or ""),
                  "image_size": cfg.model.unet.image_size},
        "steps": steps, "inversion": cfg.inversion.label, "by_steps": by_steps,
        "error_falls_with_steps": reconstruction.falls_with_steps(by_steps),
        "ms_ssim_scales": reconstruction.ms_ssim_scales(cfg.face.align.crop_size),
        "lpips_skipped": lpips.skipped,
        "counts": {"videos": len(videos), "failed": len({r["video_id"] for r in rows if r["status"] != "ok"})},
        "paper": paper.as_json()["reconstruction"],
    })


def run_edit(cfg: EvalConfig) -> str:
    """TL-ID, TG-ID and flicker of every finished (video, edit) of an edit job; return the summary's URI."""
    from dva.face.landmarker import build_landmarker

    embed = consistency.build_identity_embedder(cfg.identity, configured_device(cfg.device))
    pairs, frames = consistency.evaluate_edit_outputs(
        cfg.input, embed, crop_size=cfg.crop_size_for_identity, face_cfg=cfg.face, chunk=cfg.batch_frames,
        landmarker=functools.cache(lambda: build_landmarker(cfg.face)), fail_fast=cfg.fail_fast, log=log.info)
    prefix = eval_prefix(cfg.output_prefix, "edit")
    write_table(join(prefix, "results.parquet"), pairs, consistency.SCHEMA)
    write_table(join(prefix, "frames.parquet"), frames, consistency.FRAMES_SCHEMA)
    return write_summary(prefix, {
        "mode": "edit", "input": redact(cfg.input), "results": "results.parquet", "frames": "frames.parquet",
        "identity": {"kind": cfg.identity.kind, "weights": redact(cfg.identity.weights or ""),
                     "crop_size": cfg.crop_size_for_identity},
        **consistency.summarise(pairs),
        "paper": paper.as_json()["temporal"],
    })


def run_eval(cfg: EvalConfig) -> str:
    """Run the evaluation `cfg.mode` names; return the URI of its summary.json."""
    return run_reconstruction(cfg) if cfg.mode == "reconstruction" else run_edit(cfg)


def main(argv: Optional[list[str]] = None, preset: str = "local_tiny") -> int:
    """`dva eval [--config NAME|YAML] key=value ...` — also the `ray job submit` entrypoint (jobs/eval.py)."""
    import argparse
    import json

    from dva.evaluation.results import read_summary

    parser = argparse.ArgumentParser(prog="dva eval", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=preset, help="preset in configs/eval/ or a YAML path")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. mode=edit input=out/edit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[dva] %(message)s")
    try:
        cfg = load_eval_config(args.config, args.overrides)
        uri = run_eval(cfg)
        summary = read_summary(uri)
    except DvaError as err:
        print(f"dva eval: error: {redact(err)}", file=sys.stderr)
        return 2
    shown = summary["by_steps"] if cfg.mode == "reconstruction" else {"mean": summary["mean"],
                                                                       "by_edit": summary["by_edit"]}
    print(json.dumps(shown, indent=1))
    print(f"[dva] summary: {redact(uri)}")
    failed = summary["counts"]["failed"]
    evaluated = summary["counts"].get("ok", summary["counts"].get("videos", 0) - failed)
    return 1 if failed and not evaluated else 0
