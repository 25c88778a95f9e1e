"""The edit job against object storage, odd names, a killed driver and a killed stage-B actor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import s3fs

from edit_job_args import job_overrides
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import run_edit_job
from dva.runtime.manifest import read_manifest
from dva.samples import make_sample_clip
from dva.storage import canonical_uri, list_files
from dva.video import iter_frames, probe

REPO = Path(__file__).resolve().parents[2]


def run(input_, output, ckpt, *extra):
    cfg = load_job_config(EditJobConfig, "local_tiny", job_overrides(input_, output, ckpt, *extra))
    return run_edit_job(cfg)


def ok_outputs(prefix: str) -> dict[tuple[str, str], str]:
    return {(r["video"], r["edit"]): r["output"] for r in read_manifest(prefix).to_pylist() if r["status"] == "ok"}


def psnr(a_uri: str, b_uri: str) -> float:
    a = np.stack(list(iter_frames(a_uri))).astype(np.float64)
    b = np.stack(list(iter_frames(b_uri))).astype(np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("two")
    make_sample_clip(folder / "a.mp4", "astronaut", frames=5, audio=True)
    make_sample_clip(folder / "b.mp4", "grace_hopper", frames=4, seed=3)
    make_sample_clip(folder / "c.mp4", "astronaut", frames=4, seed=4)
    return str(folder)


@pytest.fixture(scope="module")
def reference_run(ray_local, two_clips, tiny_checkpoint, tmp_path_factory) -> str:
    """An uninterrupted run: what resumed and retried runs must reproduce."""
    out = str(tmp_path_factory.mktemp("reference"))
    summary = run(two_clips, out, tiny_checkpoint)
    assert summary.ok == 3
    return out


def test_s3_in_and_out(ray_local, s3_bucket, two_clips, tiny_checkpoint, reference_run):
    fs = s3fs.S3FileSystem()
    fs.put(two_clips + "/", f"{s3_bucket}/in/", recursive=True)
    out = f"{s3_bucket}/out"
    summary = run(f"{s3_bucket}/in", out, tiny_checkpoint)
    assert summary.ok == 3 and summary.failed == 0
    rows = read_manifest(out).to_pylist()
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 3
    for r in rows:
        assert r["output"].startswith(out + "/videos/")
        info = probe(r["output"])
        assert info.num_frames == r["frames"] and info.has_audio == r["video"].endswith("/a.mp4")
        local_twin = os.path.join(two_clips, r["video"].rsplit("/", 1)[-1])
        twin = next(u for (v, _), u in ok_outputs(reference_run).items() if v == canonical_uri(local_twin))
        assert psnr(r["output"], twin) > 35  # the same edit, whatever the storage
    text = " ".join(str(v) for r in rows for v in r.values())
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in text and os.environ["AWS_ACCESS_KEY_ID"] not in text
    assert not [u for u in list_files(out) if "/.work/" in u or ".partial" in u]


def test_odd_names_stay_under_the_output_prefix(ray_local, tmp_path, tiny_checkpoint):
    root = tmp_path / "inputs"
    names = ["with space.mp4", "unicodé ñame.mp4", "sub/../dots..mp4"]
    for i, name in enumerate(names):
        make_sample_clip(root / "data" / name.replace("sub/../", ""), "astronaut", frames=3, seed=i)
    outside = make_sample_clip(tmp_path / "elsewhere" / "outside.mp4", "astronaut", frames=3, seed=9)
    manifest = root / "data" / "list.csv"
    manifest.write_text("uri\n" + "\n".join(f'"{n}"' for n in names) + "\n../../elsewhere/outside.mp4\n")
    out = tmp_path / "out"
    summary = run(str(manifest), str(out), tiny_checkpoint)
    assert summary.ok == 4, summary.failures
    for path in (tmp_path).rglob("*"):
        if path.is_file() and path.suffix == ".mp4" and "out" in path.parts:
            assert out in path.parents  # nothing written outside the output prefix
    outputs = list(ok_outputs(str(out)).values())
    assert len(set(outputs)) == 4 and all(o.startswith(str(out) + "/videos/") for o in outputs)
    assert any("with space.mp4" in o for o in outputs) and any("unicodé ñame.mp4" in o for o in outputs)
    assert not any("/../" in o for o in outputs) and str(outside)


@pytest.mark.slow
def test_killed_driver_resumes_with_only_the_missing_videos(ray_local, two_clips, tiny_checkpoint, reference_run,
                                                           tmp_path):
    out = str(tmp_path / "resumed")
    # A writer task that needs every CPU of the test cluster: the videos are committed one after another.
    args = [sys.executable, str(REPO / "jobs" / "edit.py"), "--config", "local_tiny",
            *job_overrides(two_clips, out, tiny_checkpoint, "writer.num_cpus=3")]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    for line in proc.stdout:
        if line.startswith("[dva] done"):
            os.killpg(proc.pid, signal.SIGKILL)  # the driver dies right after its first committed video
            break
    proc.wait(timeout=60)
    done_before = set(ok_outputs(out))
    assert 1 <= len(done_before) < 3
    summary = run(two_clips, out, tiny_checkpoint)
    assert summary.skipped == len(done_before) and summary.ok == 3 - len(done_before)
    resumed, reference = ok_outputs(out), ok_outputs(reference_run)
    assert set(resumed) == set(reference)
    for key in reference:
        assert probe(resumed[key]).num_frames == probe(reference[key]).num_frames
        assert psnr(resumed[key], reference[key]) > 35


@pytest.mark.slow
def test_killed_generate_actor_still_yields_every_output(ray_local, two_clips, tiny_checkpoint, reference_run,
                                                         tmp_path):
    out = tmp_path / "killed"
    killed = []

    def kill_stage_b_once():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if list((out / ".work").rglob("*.npy")) if (out / ".work").exists() else []:
                ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
                for line in ps.splitlines():
                    if "GenerateStage" in line and "ps -eo" not in line:
                        os.kill(int(line.split()[0]), signal.SIGKILL)
                        killed.append(line)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_stage_b_once, daemon=True)
    killer.start()
    summary = run(two_clips, str(out), tiny_checkpoint, "generate.batch_frames=3")
    killer.join(timeout=5)
    assert killed, "the stage-B actor was never seen running"
    assert summary.ok == 3 and summary.failed == 0
    got, reference = ok_outputs(str(out)), ok_outputs(reference_run)
    assert set(got) == set(reference)
    for key in reference:
        assert psnr(got[key], reference[key]) > 35
