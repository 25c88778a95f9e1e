"""`dva check` plans what the edit job then does (issue 27): face frames, UNet calls per inversion method and the
bytes of latents, each within 5 % of a real job's, on a clip with one person in its first half and two in its
second; then a further edit, planned from the stored tracks, decodes the stored x_T only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edit_job_args import job_overrides
from dva.cli import main as dva
from dva.pipeline.edit_job import job_config_from_arguments, run_edit_job
from dva.samples import make_sample_clip

pytestmark = pytest.mark.slow
FRAMES, ENTERS = 24, 12  # 24 frames: the sampled detection looks at every 2nd (16 per video)


@pytest.fixture(scope="module")
def half_pair(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("plan_in") / "videos"
    make_sample_clip(folder / "pair.mp4", ("astronaut", "grace_hopper"), frames=FRAMES, size=(480, 360),
                     face_range=[None, (ENTERS, FRAMES)])
    return str(folder)


def _plan(capsys, overrides: list[str]) -> dict[str, str]:
    code = dva(["check", "edit", "--config", "local_tiny", *overrides])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = (line.strip().split("  ", 1) for line in out.split("--- plan ---")[1].splitlines()[1:]
            if line.startswith("  "))
    return {what: value.strip() for what, value in rows}


def _number(text: str, pattern: str) -> int:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return int(found.group(1).replace(",", ""))


def _latent_bytes(output: Path) -> int:
    return sum(p.stat().st_size for p in (output / "latents").rglob("*") if p.is_file())


def summary_frames(output: Path) -> int:
    """The face frames of the largest track the job stored (`tracks.json`)."""
    from dva.latents import read_tracks_summary

    [video] = [p.name for p in (output / "latents").iterdir()]
    tracks = read_tracks_summary(str(output), video)["tracks"]
    largest = max(tracks, key=lambda t: t["size"])
    return largest["last"] - largest["first"] + 1


def _job(overrides: list[str]):
    summary = run_edit_job(job_config_from_arguments("local_tiny", overrides))
    assert summary.ok == 1 and summary.failed == 0, summary.failures
    return summary


@pytest.mark.parametrize("method, inversion_calls", [("ddim", 2), ("fixed_point", 6)])  # N=3: N−1, N·2
def test_the_plan_matches_what_the_job_does(ray_local, capsys, half_pair, tiny_checkpoint, tmp_path, method,
                                            inversion_calls):
    out = tmp_path / "out"
    overrides = job_overrides(half_pair, str(out), tiny_checkpoint, f"inversion.method={method}")
    plan = _plan(capsys, overrides)
    summary = _job(overrides)
    n = 3  # job_overrides
    face_frames = _number(plan["face frames"], r"^([\d,]+) of the faces")
    assert face_frames == pytest.approx(summary.frames, rel=0.05)
    calls = _number(plan["UNet calls"], r"^([\d,]+):")
    inversion = _number(plan["UNet calls"], rf"inversion \({re.escape(method)}[^)]*, {inversion_calls} per face "
                                            r"frame\) ([\d,]+),")
    generation = _number(plan["UNet calls"], rf"generation \(N = {n} per face frame and edit\) ([\d,]+)")
    assert calls == inversion + generation
    assert calls == pytest.approx(summary.unet_calls, rel=0.05)
    assert inversion == pytest.approx(summary.unet_calls - n * summary.frames, rel=0.05)  # one edit: N per frame
    latents = _number(plan["bytes written"], r"latents ([\d,]+) bytes")
    assert latents == pytest.approx(_latent_bytes(out), rel=0.05)

    # A further edit of the larger face: the tracks are stored (counted exactly), its x_T too (only N per frame).
    before = _latent_bytes(out)
    further = [*overrides, "edit=reconstruct@largest"]
    plan = _plan(capsys, further)
    assert "stored tracks: 1 video(s)" in plan["face frames"]
    assert plan["face frames"].startswith(f"{summary_frames(out)} of the faces")
    summary = _job(further)
    assert _number(plan["UNet calls"], r"^([\d,]+):") == summary.unet_calls == n * FRAMES
    assert _number(plan["bytes written"], r"latents ([\d,]+) bytes") == 0 and _latent_bytes(out) == before
