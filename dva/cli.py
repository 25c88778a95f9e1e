"""The `dva` command. Each job's subcommand lives beside its job; the two tools whose code lives in layers below
the job runtime (`face-crop`, `convert-reference`) are defined here. All parse their arguments and report errors
with the one command-line helper, `dva.runtime.cli` (same `--config`, overrides, error format and exit codes)."""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn, Optional, Sequence

from dva.runtime.cli import (EXIT_OK, EXIT_USAGE, add_config_arguments, command_parser, error_line, exit_process,
                             run_command)

# name -> ("module:function(argv) -> int", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "edit": ("dva.pipeline.edit_job:main", "edit a dataset of face videos on Ray (local or cluster)"),
    "encode": ("dva.pipeline.edit_job:encode_main", "encode videos to latents (z_id, z_lnd, quads, x_T) on Ray"),
    "eval": ("dva.evaluation.job:main", "evaluate reconstruction at several N, or an edit run's TL-ID/TG-ID/flicker"),
    "report": ("dva.report.edit_report:main", "write the static HTML report of an edit run (stills, players, metrics)"),
    "preprocess": ("dva.train.preprocess:main", "training shards (crops, z codes, masks) from face videos on Ray"),
    "train": ("dva.train.ray_train:main", "train the autoencoder on Ray Train (DDP, checkpoints, resume)"),
    "train-classifier": ("dva.train.classifier_job:main",
                         "attribute classifiers on z_id from annotated face images (for classifier edits)"),
    "check": ("dva.preflight.cli:main",
              "pre-flight check of a job (config, weights, inputs, output, resources, plan); starts nothing"),
    "face-crop": ("dva.cli:face_crop", "write the aligned face-crop video and quads of one video"),
    "convert-reference": ("dva.cli:convert_reference", "convert the released reference DVA checkpoint"),
}


def main(argv: Optional[list[str]] = None) -> int:
    """Run one subcommand in this process and return its exit code (see `dva.runtime.cli`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: dva COMMAND [ARGS]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:20s} {help_}")
        print("\nEvery job command also takes --dry-run: the pre-flight check of `dva check` instead of the job.")
        return EXIT_OK if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(error_line("dva", f"unknown command {name!r}; run `dva --help` for the list"), file=sys.stderr)
        return EXIT_USAGE
    if "--dry-run" in rest:
        from dva.preflight.cli import check_job
        from dva.preflight.jobs import JOBS

        if name in JOBS:
            return check_job(name, rest, prog=f"dva {name} --dry-run")
    module, fn = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), fn)(rest)


def face_crop(argv: Sequence[str]) -> int:
    """`dva face-crop INPUT OUT_DIR [--config NAME|YAML] [key=value ...]` (`dva.face.crop_video`)."""
    import dva.face.crop_video as module
    from dva.face.config import load_face_config

    parser = command_parser("dva face-crop", module.__doc__.splitlines()[0])
    parser.add_argument("input", help="video path or URI (s3://...)")
    parser.add_argument("out_dir", help="folder or URI prefix for <stem>.crop.mp4 and <stem>.track.npz")
    add_config_arguments(parser, "dlib", "face", "align.sigma_axes=2")

    def run(args) -> int:
        result = module.crop_video(args.input, args.out_dir, load_face_config(args.config, args.overrides))
        print(f"{result.video}\n{result.track}\n{result.num_frames} frames, face detected in "
              f"{result.detected_fraction:.0%}")
        return EXIT_OK

    return run_command(parser, argv, run, intermixed=True)  # --config may come between IN OUT and the overrides


def convert_reference(argv: Sequence[str]) -> int:
    """`dva convert-reference --ckpt last.ckpt [--encoders DIR] --out model.safetensors [--raw] [key=value ...]`
    (`dva.models.reference.convert`)."""
    from dva.config import load_config
    from dva.models.config import ModelConfig
    from dva.models.reference.convert import PARTS, convert

    parser = command_parser("dva convert-reference", "Convert the reference DVA checkpoint (PyTorch Lightning .ckpt) "
                            "into a dva checkpoint.")
    parser.add_argument("--ckpt", required=True, help="the released Lightning checkpoint (local path or s3:// URI)")
    parser.add_argument("--out", required=True, help="the dva checkpoint to write (.safetensors); its config goes "
                        "beside it as .yaml")
    parser.add_argument("--encoders", metavar="DIR", help="folder holding the released encoder files, used for the "
                        "networks the checkpoint lacks: " + ", ".join(p.file_name for p in PARTS.values()))
    parser.add_argument("--raw", action="store_true", help="take the raw `model.*` weights instead of the EMA ones")
    add_config_arguments(parser, "reference256", "model")  # the model config that describes the checkpoint

    def run(args) -> int:
        cfg = load_config(ModelConfig, args.config, args.overrides, group="model")
        path, sources = convert(args.ckpt, args.out, cfg, encoders_dir=args.encoders, use_ema=not args.raw)
        print(f"wrote {path} ({'raw' if args.raw else 'EMA'} weights, model config {cfg.name!r}) and "
              f"{path.with_suffix('.yaml')}")
        for role, source in sources.items():
            print(f"  {role}: from {source}")
        return EXIT_OK

    return run_command(parser, argv, run)


def entry(argv: Optional[list[str]] = None) -> NoReturn:
    """The `dva` console script and `jobs/*.py`: `main(argv)` as the whole process, ended by
    `dva.runtime.cli.exit_process` (a finished job exits with its code, never with a crash in native teardown)."""
    exit_process(lambda: main(argv))


if __name__ == "__main__":
    entry()
