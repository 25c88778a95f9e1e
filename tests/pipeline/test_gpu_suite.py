"""benchmarks/gpu_suite.py runs its whole code path on a CPU with the tiny config (what CI can check of it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _suite(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "suite.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--model", "tiny",
                           "--device", "cpu", "--batches", "2", "--steps", "3", "--json", str(out), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _rows(report: dict, section: str) -> list[dict]:
    return [r for r in report["rows"] if r["section"] == section]


@pytest.mark.slow
def test_suite_runs_every_section_on_cpu(tmp_path):
    data = tmp_path / "faces.pt"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--make-accuracy-data", str(data)],
                   check=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                   capture_output=True, timeout=600)
    report = _suite(tmp_path, "--accuracy-data", str(data), "--accuracy-steps", "5", "--job", "--job-videos", "2",
                    "--job-frames", "6", "--job-size", "128")
    assert report["model"] == "tiny" and report["gflops"] > 0
    assert _rows(report, "ceiling")[0]["tflops"] > 0
    forward = _rows(report, "forward")
    assert {r["name"] for r in forward} == {"fp32 NCHW eager b=2", "bf16 NCHW eager b=2"}
    assert all(r["tflops"] > 0 and "failed" not in r for r in forward)
    sampling = _rows(report, "sampling")[0]
    assert sampling["unet_calls_per_frame"] == 5 and sampling["frames_per_s"] > 0
    assert sampling["generate_only_fps"] > sampling["frames_per_s"]  # N calls instead of 2N−1
    accuracy = _rows(report, "accuracy")[0]
    assert 0 < accuracy["x0_relative"] < 0.1 < accuracy["fp32_reconstruction_error"]
    assert _rows(report, "stage B")[0]["frames"] == 8
    job = _rows(report, "job")[0]
    assert job["frames"] == 12 and job["second_edit_calls_per_frame"] == 10.0  # local_tiny: N=10


def test_suite_budget_skips_rows_instead_of_running_over(tmp_path):
    report = _suite(tmp_path, "--budget", "0", "--no-job")
    skipped = [r for r in report["rows"] if "skipped" in r]
    assert {r["section"] for r in skipped} == {"forward", "sampling", "accuracy", "stage B"}
