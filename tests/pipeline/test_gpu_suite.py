"""benchmarks/gpu_suite.py runs its whole code path on a CPU with the tiny config (what CI can check of it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    report = _suite(tmp_path, "--accuracy-data", str(data), "--accuracy-steps", "5", "--repeats", "3", "--job",
                    "--job-videos", "2", "--job-frames", "6", "--job-size", "128")
    assert report["model"] == "tiny" and report["gflops"] > 0 and report["torch"] == torch.__version__
    assert _rows(report, "ceiling")[0]["tflops"] > 0
    forward = {r["name"]: r for r in _rows(report, "forward")}
    # The fused GroupNorm path runs interpreted here (TRITON_INTERPRET=1 from tests/conftest.py).
    assert set(forward) == {"fp32 NCHW eager b=2", "bf16 NCHW eager b=2", "bf16 NCHW fused eager b=2"}
    assert all(r["ms_min"] <= r["ms"] <= r["ms_max"] and r["tflops"] > 0 for r in forward.values())
    assert forward["fp32 NCHW eager b=2"]["eps_relative"] == 0  # the reference itself
    # Random weights (ε ≈ 5 % off in bf16 here); the fused chains round less often than eager.
    eager, fused = (forward[f"bf16 NCHW {kind} b=2"]["eps_relative"] for kind in ("eager", "fused eager"))
    assert 0 < fused < 1.1 * eager < 0.2
    sampling = _rows(report, "sampling")[0]
    assert sampling["unet_calls_per_frame"] == 5 and sampling["fps_min"] <= sampling["frames_per_s"] > 0
    assert sampling["generate_only_fps"] > sampling["frames_per_s"]  # N calls instead of 2N−1
    accuracy = {r["name"].split(" vs ")[0]: r for r in _rows(report, "accuracy")}
    assert set(accuracy) == {"bf16 NCHW eager", "bf16 NCHW fused eager"}
    row = accuracy["bf16 NCHW eager"]
    assert 0 < row["eps_relative"] < 0.05 and 0 < row["x0_relative"] < 0.1 < row["fp32_reconstruction_error"]
    assert "interpreted" in accuracy["bf16 NCHW fused eager"]["skipped"]  # too slow here; on CUDA it is measured
    assert _rows(report, "stage B")[0]["frames"] == 8
    job = _rows(report, "job")[0]
    # 2 clips × 6 frames; a frame before the first or after the last detected face (dlib at 128 px) is copied, not
    # inverted, so the UNet may see one or two fewer.
    assert 10 <= job["frames"] <= 12 and job["second_edit_calls_per_frame"] == 10.0  # local_tiny: N=10


def test_suite_budget_skips_rows_instead_of_running_over(tmp_path):
    report = _suite(tmp_path, "--budget", "0", "--no-job")
    skipped = [r for r in report["rows"] if "skipped" in r]
    assert {r["section"] for r in skipped} == {"forward", "sampling", "accuracy", "stage B"}
