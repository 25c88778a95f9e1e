"""`ray job submit` to a separately started Ray cluster, as the README's cluster section does it, on one machine:
a `ray start --head` on loopback, the repo as working_dir (without .venv), the S3 endpoint and credentials passed
only through the runtime env, videos, checkpoint and outputs in an S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import s3fs

from dva.runtime.manifest import read_manifest
from dva.samples import make_sample_clip
from dva.video import probe
from ray_head import EXCLUDES, REPO, VENV_BIN, job_env, submit
from ray_head import ray_head as start_head

pytestmark = pytest.mark.slow

CLIPS = {"astronaut.mp4": ("astronaut", 6), "grace.mp4": ("grace_hopper", 5)}  # name: (person, frames)


@pytest.fixture(scope="module")
def ray_head():
    """A head with 3 CPUs that runs the jobs itself; yields the dashboard URL."""
    with start_head(["--num-cpus=3"]) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def submitted(ray_head, s3_server, tiny_checkpoint, tmp_path_factory):
    """The edit job over two clips in s3://<bucket>/in, checkpoint in the bucket too, output to s3://<bucket>/out."""
    tmp = tmp_path_factory.mktemp("job_submit")
    bucket = s3_server.make_bucket()
    fs = s3fs.S3FileSystem()
    for name, (person, frames) in CLIPS.items():
        local = make_sample_clip(tmp / name, person, frames=frames, seed=len(name))
        fs.put_file(str(local), f"{bucket}/in/{name}")
    fs.put_file(tiny_checkpoint, f"{bucket}/models/tiny.safetensors")
    done = submit(ray_head, job_env(tmp), "python", "jobs/edit.py", "--config", "local_tiny",
                  f"input={bucket}/in", f"output={bucket}/out", f"model.checkpoint={bucket}/models/tiny.safetensors",
                  "steps=3", "chunk_frames=3", "progress=false")
    return done, bucket, tmp


def test_job_succeeds_and_reports(submitted):
    done, _, _ = submitted
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "succeeded" in done.stdout.lower()
    assert "[dva] 2 ok, 0 failed" in done.stdout  # the job's summary, tailed by `ray job submit`


def test_outputs_in_s3_have_every_frame(submitted):
    done, bucket, tmp = submitted
    assert done.returncode == 0
    rows = read_manifest(f"{bucket}/out").to_pylist()
    by_name = {r["video"].rsplit("/", 1)[-1]: r for r in rows}
    assert sorted(by_name) == sorted(CLIPS) and {r["status"] for r in rows} == {"ok"}, rows
    fs = s3fs.S3FileSystem()
    for name, (_, frames) in CLIPS.items():
        row = by_name[name]
        assert row["edit"] == "reconstruct" and row["output"].startswith(f"{bucket}/out/videos/")
        local = tmp / f"out-{name}"
        fs.get_file(row["output"], str(local))
        info = probe(str(local))
        assert info.num_frames == frames == row["frames"]
        assert abs(float(info.fps) - 25.0) < 1e-6


def test_job_runs_the_venv_python_on_the_uploaded_code_without_the_venv(ray_head):
    """The driver and the workers use this machine's venv interpreter; the working_dir copy they run in holds the
    code (jobs/, dva/) but not .venv."""
    probe_code = (
        "import json, os, sys, ray, dva\n"
        "def where():\n"
        "    return {'python': sys.executable, 'cwd': os.getcwd(), 'venv': os.path.exists('.venv'),\n"
        "            'job': os.path.isfile('jobs/edit.py')}\n"
        "ray.init()\n"
        "task = ray.get(ray.remote(num_cpus=0.1)(where).remote())\n"
        "print('DVA-PROBE ' + json.dumps({'driver': where(), 'task': task, 'dva': dva.__file__}))\n"
    )
    done = submit(ray_head, {"excludes": EXCLUDES}, "python", "-c", probe_code)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("DVA-PROBE "))  # not the echoed command
    found = json.loads(line.removeprefix("DVA-PROBE "))
    for side in ("driver", "task"):
        where = found[side]
        assert Path(where["python"]).parent == VENV_BIN, where
        assert where["job"] and not where["venv"], where
        assert not Path(where["cwd"]).is_relative_to(REPO), where  # a copy, not the checkout
    assert not Path(found["dva"]).is_relative_to(REPO)  # the uploaded package was imported
