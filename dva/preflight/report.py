"""What a pre-flight check found: one line per check, each naming the config key or input it is about."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

from dva.errors import DvaError, MissingWeightsError
from dva.runtime.cli import EXIT_CHECK_FAILED, EXIT_OK
from dva.storage import NotFetched, redact, shown

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Finding:
    status: str  # OK, WARN or FAIL
    key: str  # the config key or input the finding is about
    detail: str


def describe_error(err: BaseException) -> str:
    """A project error as it reads; anything else (a bug, a missing module) with its type and the line it came from,
    so a preset that cannot be built is a finding, not a traceback."""
    if isinstance(err, DvaError):
        return redact(err)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
    place = f" (at {frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno})" if frames else ""
    return redact(f"{type(err).__name__}: {err}{place}")


def megabytes(size: Optional[int]) -> str:
    return "size unknown" if size is None else f"{size / 1e6:,.1f} MB"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    plan: list[tuple[str, str]] = field(default_factory=list)
    # Weight keys already reported missing: a loader that then fails on the same file adds nothing new.
    missing_keys: set[str] = field(default_factory=set)

    def is_missing(self, config_key: str) -> bool:
        """Whether `config_key` (full, or as a loader names it: `fan.weights` for `face.fan.weights`) was already
        reported missing."""
        return any(k == config_key or k.endswith("." + config_key) for k in self.missing_keys)

    def add(self, status: str, key: str, detail: str) -> None:
        self.findings.append(Finding(status, key, shown(detail)))

    def step(self, key: str, check: Callable[[], Optional[str]]) -> bool:
        """Run `check` (it returns what it found, or raises); record ok with that text, or FAIL with the error.

        A remote weight file that exists but is not cached (`NotFetched`) is ok: its loader was not run, because
        nothing is downloaded here."""
        try:
            found = check()
        except NotFetched as err:
            self.add(OK, key, f"{err.uri} exists ({megabytes(err.size)}); not loaded: remote and not in the local "
                              "cache, and a check downloads nothing (each worker fetches it once)")
            return True
        except MissingWeightsError as err:
            if not self.is_missing(err.config_key):
                self.add(FAIL, key, describe_error(err))
            return False
        except Exception as err:  # every failure is a finding: the check goes on to list the others
            self.add(FAIL, key, describe_error(err))
            return False
        self.add(OK, key, found or "ok")
        return True

    def note(self, what: str, value: str) -> None:
        self.plan.append((what, shown(value)))

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == FAIL]

    @property
    def exit_code(self) -> int:
        return EXIT_CHECK_FAILED if self.failures else EXIT_OK

    def render(self) -> str:
        width = max([len(f.key) for f in self.findings] + [10])
        lines = ["--- checks ---"]
        lines += [f"  {f.status:4s}  {f.key:{width}s}  {f.detail}" for f in self.findings]
        if self.plan:
            lines.append("--- plan ---")
            plan_width = max(len(what) for what, _ in self.plan)
            lines += [f"  {what:{plan_width}s}  {value}" for what, value in self.plan]
        failed = self.failures
        if failed:
            lines.append(f"--- {len(failed)} check(s) failed: fix these before starting the job ---")
            lines += [f"  {f.key}: {f.detail}" for f in failed]
        else:
            warned = sum(f.status == WARN for f in self.findings)
            lines.append(f"--- every check passed{f' ({warned} warning(s))' if warned else ''} ---")
        return "\n".join(lines)
