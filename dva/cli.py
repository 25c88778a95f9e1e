"""The `dva` command. Each subcommand lives beside the code it drives and parses its own arguments."""

from __future__ import annotations

import importlib
import sys

from dva.errors import DvaError

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
    "face-crop": ("dva.face.crop_video:cli", "write the aligned face-crop video and quads of one video"),
    "convert-reference": ("dva.convert_reference:cli", "convert the released reference DVA checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: dva COMMAND [ARGS]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:20s} {help_}")
        print("\nEvery job command also takes --dry-run: the pre-flight check of `dva check` instead of the job.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dva: unknown command {name!r}; run `dva --help` for the list", file=sys.stderr)
        return 2
    if "--dry-run" in rest:
        from dva.preflight.cli import check_job
        from dva.preflight.jobs import JOBS

        if name in JOBS:
            return check_job(name, rest, prog=f"dva {name} --dry-run")
    module, fn = COMMANDS[name][0].split(":")
    try:
        return int(getattr(importlib.import_module(module), fn)(rest) or 0)
    except DvaError as err:
        print(f"dva {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
