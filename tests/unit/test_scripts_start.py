"""Every script the project ships (`benchmarks/*.py`, `jobs/*.py`) starts: `--help` in its own process, as a user
runs it (a new script is found by the glob). The benchmarks that can run on a CPU in seconds to a minute also run
once, tiny, in the slow suite; `benchmarks/gpu_suite.py` has its own (tests/pipeline/test_gpu_suite.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(str(p.relative_to(REPO)) for folder in ("benchmarks", "jobs") for p in (REPO / folder).glob("*.py"))


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_glob_finds_the_benchmarks_and_the_job_entrypoints():
    assert {"benchmarks/inversion.py", "benchmarks/gpu_suite.py", "jobs/edit.py", "jobs/train.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_starts_and_prints_its_usage(script):
    done = run_script(script, "--help")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: ") and "--help" in done.stdout, done.stdout[:500]


@pytest.mark.slow
def test_inversion_benchmark_prints_a_row_per_method_and_n():
    """The docstring's CPU command, at 2 frames (TL-ID / TG-ID need 2) and N=2."""
    done = run_script("benchmarks/inversion.py", "--frames", "2", "--grid", "ddim,fixed_point:2=2")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if not line.startswith("#")]
    assert rows[0][:2] == ["method", "N"] and [r[:2] for r in rows[1:]] == [["ddim", "2"], ["fixed_point×2", "2"]]
    assert all(len(r) == len(rows[0]) and "-" not in r for r in rows[1:])  # every metric defined at 2 frames
