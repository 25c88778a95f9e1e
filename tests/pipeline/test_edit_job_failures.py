"""One video that fails in stage B (a lost x_T chunk, a write that fails) fails alone: its pairs are recorded failed
with the reason, and every other video of the job, batched with it or not, finishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from edit_job_args import job_overrides
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import run_edit_job
from dva.runtime.manifest import read_manifest
from dva.samples import make_sample_clip
from dva.storage import video_id


def run(input_, output, ckpt, *extra):
    # batch_frames = 2 chunks: stage B batches chunks of different videos together
    return run_edit_job(load_job_config(EditJobConfig, "local_tiny", job_overrides(input_, output, ckpt, *extra)))


@pytest.fixture(scope="module")
def three_clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("three")
    make_sample_clip(folder / "a.mp4", "astronaut", frames=5)
    make_sample_clip(folder / "b.mp4", "grace_hopper", frames=4, seed=3)
    make_sample_clip(folder / "c.mp4", "astronaut", frames=4, seed=4)
    return folder


def rows_by_name(out) -> dict[str, dict]:
    return {r["video"].rsplit("/", 1)[-1]: r for r in read_manifest(str(out)).to_pylist()}


@pytest.mark.slow
def test_a_lost_x_T_chunk_fails_only_its_video(ray_local, three_clips, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    assert run(str(three_clips), str(out), tiny_checkpoint, "edits=[]").ok == 3  # encode: latents stored
    lost = next((out / "latents" / video_id(str(three_clips / "b.mp4"))).rglob("x_T/000001.npy"))
    lost.unlink()
    summary = run(str(three_clips), str(out), tiny_checkpoint, "edits=[reconstruct]")
    assert (summary.ok, summary.failed) == (2, 1), summary.failures
    rows = rows_by_name(out)
    assert rows["a.mp4"]["status"] == rows["c.mp4"]["status"] == "ok"
    failed = [r for r in read_manifest(str(out)).to_pylist() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["video"].endswith("/b.mp4") and failed[0]["edit"] == "reconstruct"
    assert "x_T of chunk 1" in failed[0]["error"] and "reuse_latents=false" in failed[0]["error"]
    assert not (out / ".work").exists()


@pytest.mark.slow
def test_a_failing_write_fails_only_its_video(ray_local, three_clips, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    blocked = out / ".work" / video_id(str(three_clips / "a.mp4"))
    blocked.parent.mkdir(parents=True)
    blocked.write_bytes(b"a file where the video's work folder goes: every write under it fails")
    summary = run(str(three_clips), str(out), tiny_checkpoint, "edits=[reconstruct]")
    assert (summary.ok, summary.failed) == (2, 1), summary.failures
    rows = rows_by_name(out)
    assert rows["b.mp4"]["status"] == rows["c.mp4"]["status"] == "ok"
    assert rows["a.mp4"]["status"] == "failed" and "cannot write" in rows["a.mp4"]["error"]
    assert str(blocked) in rows["a.mp4"]["error"]
