"""`dva eval`: reconstruction quality of a model on videos, or temporal consistency of an edit job's outputs.

    dva eval --config local_tiny mode=reconstruction input=clips/ output=out/eval model.checkpoint=… steps=[20,100]
    dva eval … methods=[ddim,fixed_point:2] identity_target=other_person.mp4   # compare inversions, identity edit
    dva eval --config local_tiny mode=edit input=out/edit          # results under out/edit/eval/edit/

Single process: videos are evaluated one after another (on the GPU when there is one). Results are Parquet tables
and a summary.json under `<output>/eval/<mode>/` (local or s3://); `dva report` shows them.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

from dva.errors import DvaError
from dva.evaluation import consistency, reconstruction
from dva.evaluation.config import EvalConfig, load_eval_config
from dva.metrics import paper
from dva.runtime.cli import EXIT_FAILED, EXIT_OK, command_parser, run_command
from dva.runtime.cluster import configured_device
from dva.runtime.config import RANDOM_WEIGHTS_WARNING
from dva.runtime.eval_results import eval_prefix, write_summary, write_table
from dva.storage import join, redact, shown

log = logging.getLogger("dva.eval")


def run_reconstruction(cfg: EvalConfig) -> str:
    """Evaluate every input video per inversion method and N; write the tables and summary; return the summary's
    URI. `by_method` holds every method's table; `by_steps` (and `inversion`) the first method's, as before
    methods could be compared."""
    from dva.face.landmarker import build_landmarker
    from dva.runtime.weights import load_model
    from dva.runtime.inputs import discover_inputs
    from dva.precision import autocast_dtype

    if cfg.random_weights:
        log.warning("warning: %s", RANDOM_WEIGHTS_WARNING)
    device = configured_device(cfg.device)
    steps = sorted(set(cfg.steps))
    inversions = cfg.inversions
    lpips = reconstruction.LpipsScorer(cfg.lpips_weights, device)  # a bad weights file fails here, before any work
    videos = discover_inputs(cfg.input)
    model = load_model(cfg.model, device)
    landmarker = build_landmarker(cfg.face, "face.")
    identity = None
    if cfg.identity_target:
        identity = reconstruction.identity_edit(
            cfg.identity_target, model, landmarker, cfg.face,
            consistency.build_identity_embedder(cfg.identity, device), crop_size=cfg.crop_size_for_identity,
            batch_frames=cfg.batch_frames, device=device)
    rows = []
    for video in videos:
        try:
            rows += reconstruction.evaluate_video(
                video, model, landmarker, cfg.face, steps, lpips=lpips, inversions=inversions, identity=identity,
                batch_frames=cfg.batch_frames,
                max_frames=cfg.max_frames, device=device, autocast_dtype=autocast_dtype(cfg.precision, device),
                log=log.debug)
        except Exception as err:  # recorded per video; the evaluation goes on
            if cfg.fail_fast:
                raise
            message = redact(str(err) if isinstance(err, DvaError) else f"{type(err).__name__}: {err}")
            rows += reconstruction.failed_rows(video, inversions, steps, message)
            log.info("FAILED %s: %s", shown(video.uri), shown(message))
            continue
        log.info("%s: %s", shown(video.uri), ", ".join(
            f"{r['inversion']} N={r['steps']} MSE {r['mse']:.4g} SSIM {r['ssim']:.3f}"
            for r in rows[-len(steps) * len(inversions):]))
    prefix = eval_prefix(cfg.output_prefix, "reconstruction")
    write_table(join(prefix, "results.parquet"), rows, reconstruction.SCHEMA)
    by_method = reconstruction.summarise(rows, inversions, steps)
    first = inversions[0].label
    return write_summary(prefix, {
        "mode": "reconstruction", "input": redact(cfg.input), "results": "results.parquet",
        "model": {"name": cfg.model.name, "checkpoint": redact(cfg.model.checkpoint or ""),
                  "random_weights": cfg.random_weights, "image_size": cfg.model.unet.image_size},
        "steps": steps, "methods": list(by_method), "by_method": by_method,
        "inversion": first, "by_steps": by_method[first],
        "error_falls_with_steps": all(reconstruction.falls_with_steps(table) for table in by_method.values()),
        "ms_ssim_scales": reconstruction.ms_ssim_scales(cfg.face.align.crop_size),
        "lpips_skipped": lpips.skipped,
        "identity_edit": None if identity is None else {
            "target": redact(cfg.identity_target), "kind": cfg.identity.kind, "crop_size": cfg.crop_size_for_identity},
        "counts": {"videos": len(videos), "failed": len({r["video_id"] for r in rows if r["status"] != "ok"})},
        "paper": paper.as_json()["reconstruction"],
    })


def run_edit(cfg: EvalConfig) -> str:
    """TL-ID, TG-ID and flicker of every finished (video, edit) of an edit job; return the summary's URI."""
    from dva.face.landmarker import build_landmarker

    embed = consistency.build_identity_embedder(cfg.identity, configured_device(cfg.device))
    pairs, frames = consistency.evaluate_edit_outputs(
        cfg.input, embed, crop_size=cfg.crop_size_for_identity, face_cfg=cfg.face, chunk=cfg.batch_frames,
        landmarker=functools.cache(lambda: build_landmarker(cfg.face, "face.")), fail_fast=cfg.fail_fast, log=log.info)
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


def _rounded(value):
    """`value` with every float at 4 significant digits, for the console (summary.json keeps them whole)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def main(argv: Optional[list[str]] = None, preset: str = "local_tiny") -> int:
    """`dva eval [--config NAME|YAML] key=value ...` — also the `ray job submit` entrypoint (jobs/eval.py)."""
    import json

    from dva.runtime.eval_results import read_summary

    parser = command_parser("dva eval", __doc__.splitlines()[0], config=preset, group="eval",
                            example="mode=edit input=out/edit")

    def run(args) -> int:
        cfg = load_eval_config(args.config, args.overrides)
        uri = run_eval(cfg)
        summary = read_summary(uri)
        table = summary["by_method"] if cfg.mode == "reconstruction" else {"mean": summary["mean"],
                                                                           "by_edit": summary["by_edit"]}
        print(json.dumps(_rounded(table), indent=1))
        print(f"[dva] summary: {shown(uri)}")
        failed = summary["counts"]["failed"]
        evaluated = summary["counts"].get("ok", summary["counts"].get("videos", 0) - failed)
        return EXIT_FAILED if failed and not evaluated else EXIT_OK

    return run_command(parser, argv, run)
