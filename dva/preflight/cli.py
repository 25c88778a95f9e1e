"""`dva check JOB [--config NAME|YAML] key=value ...`, and `--dry-run` on every job command (the same check).

Exit codes (`dva.runtime.cli`): 0 every check passed; 2 bad usage or config (nothing checked); 3 some check failed
(each listed).
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from dva.config import to_yaml
from dva.errors import DvaError
from dva.preflight.jobs import JOBS
from dva.preflight.report import FAIL, Report
from dva.runtime.cli import command_parser, run_command
from dva.storage import shown

DRY_RUN = "--dry-run"


def check_job(job: str, argv: Sequence[str], prog: Optional[str] = None) -> int:
    """Parse a job command line (`--config`, overrides), print the resolved config, check, print the report."""
    spec = JOBS[job]
    parser = command_parser(prog or f"dva check {job}", __doc__.splitlines()[0], config=spec.preset,
                            group=spec.group)

    def check(args) -> int:
        cfg = spec.load(args.config, args.overrides)
        print(f"[dva check] {job} job, config {args.config}; nothing is started, downloaded or left behind")
        print("--- resolved config (credentials redacted) ---")
        print("\n".join(shown(line) for line in to_yaml(cfg).rstrip().splitlines()))
        report = Report()
        try:
            spec.check(cfg, report)
        except DvaError as err:  # something the plan reads, outside the listed checks, could not be read
            report.add(FAIL, "plan", str(err))
        print(report.render(), flush=True)
        return report.exit_code

    return run_command(parser, [a for a in argv if a != DRY_RUN], check)


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("dva check", __doc__.splitlines()[0])
    parser.add_argument("job", choices=list(JOBS), help="the job to check")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="...",
                        help="the job's --config NAME|YAML and key=value overrides")
    return run_command(parser, argv, lambda args: check_job(args.job, args.arguments))
