"""`dva check JOB [--config NAME|YAML] key=value ...`, and `--dry-run` on every job command (the same check).

Exit codes: 0 every check passed; 2 bad usage or config (nothing checked); 3 some check failed (each listed).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from dva.config import to_yaml
from dva.errors import DvaError
from dva.preflight.jobs import JOBS
from dva.preflight.report import EXIT_USAGE, FAIL, Report
from dva.storage import redact

DRY_RUN = "--dry-run"


def check_job(job: str, argv: Sequence[str], prog: Optional[str] = None) -> int:
    """Parse a job command line (`--config`, overrides), print the resolved config, check, print the report."""
    spec = JOBS[job]
    prog = prog or f"dva check {job}"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=spec.preset, help=f"preset in configs/{spec.group}/ or a YAML path")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for the job")
    try:
        args = parser.parse_args([a for a in argv if a != DRY_RUN])
    except SystemExit as stop:  # argparse has printed the usage
        return EXIT_USAGE if stop.code else 0
    try:
        cfg = spec.load(args.config, args.overrides)
    except DvaError as err:
        print(f"{prog}: error: {redact(err)}", file=sys.stderr)
        return EXIT_USAGE
    print(f"[dva check] {job} job, config {args.config}; nothing is started, downloaded or left behind")
    print("--- resolved config (credentials redacted) ---")
    print(redact(to_yaml(cfg)).rstrip())
    report = Report()
    try:
        spec.check(cfg, report)
    except DvaError as err:  # something the plan reads, outside the listed checks, could not be read
        report.add(FAIL, "plan", str(err))
    print(report.render(), flush=True)
    return report.exit_code


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in JOBS:
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: dva check {{{','.join(JOBS)}}} [--config NAME|YAML] [key=value ...]\n\n{__doc__}")
            return 0
        print(f"usage: dva check {{{','.join(JOBS)}}} [--config NAME|YAML] [key=value ...]", file=sys.stderr)
        return EXIT_USAGE
    return check_job(argv[0], argv[1:])
