"""`ray job submit` to a separately started Ray cluster, as the README's cluster section does it, on one machine:
a `ray start --head` on loopback, the repo as working_dir (without .venv), the S3 endpoint and credentials passed
only through the runtime env, videos, checkpoint and outputs in an S3 server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import s3fs

from dva.pipeline.manifest import read_manifest
from dva.samples import make_sample_clip
from dva.video import probe
from s3 import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the venv's python and its `ray` command
CLIPS = {"astronaut.mp4": ("astronaut", 6), "grace.mp4": ("grace_hopper", 5)}  # name: (person, frames)
EXCLUDES = [".venv", ".git", "out"]


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on loopback with ports of its own; yields the dashboard URL.

    Torn down by signalling that process (it stops the processes it started) rather than `ray stop`, which would
    stop every Ray process on the machine, other test sessions' included.
    """
    temp_dir = tempfile.mkdtemp(prefix="rayjs-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    dashboard = free_port()
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", f"--port={free_port()}", f"--dashboard-port={dashboard}", "--num-cpus=3",
           "--disable-usage-stats", f"--temp-dir={temp_dir}", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
           f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]
    # The cluster sees no AWS_* variables: the job's runtime env must bring them, as on a real cluster. `python` in
    # the entrypoint is the venv's (workers run on this machine, with its interpreter).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    log_path = Path(temp_dir) / "ray-start.log"
    with open(log_path, "wb") as log:
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            assert head.poll() is None, f"ray start exited:\n{log_path.read_text()[-3000:]}"
            assert time.time() < deadline, f"no dashboard at {url}:\n{log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:  # anything of that session still alive (workers mid-exit): its process group is ours
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(url: str, runtime_env: dict, *entrypoint: str) -> subprocess.CompletedProcess:
    """`ray job submit` with the repo as working_dir; waits for the job and tails its logs, as the CLI does."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def job_env(tmp: Path) -> dict:
    """The runtime env of a job: the S3 server's endpoint and (dummy) credentials, a weights cache, excludes."""
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    assert "AWS_ENDPOINT_URL" in aws
    return {"excludes": EXCLUDES,
            "env_vars": {**aws, "DVA_CACHE_DIR": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}}


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
