"""The reference-vector tests find the vectors in one way (`reference_vectors`), and a missing set fails CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import reference_vectors

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_vectors_skip_locally_and_fail_in_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setattr(reference_vectors, "VECTORS", tmp_path / "absent")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=f"not found at {tmp_path / 'absent'}"):
        reference_vectors.require_vectors()


@pytest.mark.slow  # a second pytest process: ≈25 s on a busy 2-core machine
def test_every_reference_module_follows_dva_testvectors_and_fails_in_ci(tmp_path):
    """Each module's vector tests, run with DVA_TESTVECTORS naming a missing folder and CI=true: all 16 fail, none
    passes (test_reference_unet.py used to read a fixed path) and none is skipped."""
    env = {**os.environ, "CI": "true", "DVA_TESTVECTORS": str(tmp_path / "absent"), "PYTHONPATH": str(REPO)}
    tests = ["tests/unit/test_reference_unet.py", "tests/unit/test_reference_checkpoint.py",
             "tests/unit/test_reference_encoders.py::test_arcface_crop_reproduces_official_crop112"]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 1 and summary.startswith("16 errors in"), run.stdout[-3000:]
    assert "passed" not in summary and "skipped" not in summary, summary
    assert f"official test vectors not found at {tmp_path / 'absent'}" in run.stdout
