"""Production rehearsal: the cluster presets' jobs as a user runs them, on CPU, without dlib.

`configs/edit/cluster_gpu.yaml`'s edit job, `configs/preprocess/cluster.yaml`, then one step of
`configs/train/dva256_8gpu.yaml` on the shards it made: each through its `jobs/*.py` entry point in its own process,
on a local Ray on loopback, with videos, weights and outputs in an S3 server. As in the cluster image
(`cluster/Dockerfile`), dlib and its model package cannot be imported, in the driver or in any Ray worker.

Only the UNet is shrunk (with random weights, asked for: `random_weights=true`), N made small and resources scaled
to two cores, through overrides (the Ray head offers the places of a GPU pod, the custom resources cluster_gpu's
stages ask for); the front end, encoders and stages run as configured, on stand-in weight files in the released
formats (tests/standin_weights.py). The detectors are constructed to report the face box of the sample clips (a still
head, so the box is known), so every stage, the UNet included, does real work; the landmark networks are random, so
the crops are not faces.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import s3fs

from dva.pipeline.config import EditJobConfig

from dva.runtime.config import load_job_config
from dva.runtime.manifest import read_manifest
from dva.samples import make_sample_clip
from dva.train.config import load_preprocess_config, load_train_config
from dva.train.shards import list_shards
from cluster_pods import custom_resources, gpu_pod
from no_dlib import without_dlib_folder
from s3 import free_port
from standin_weights import StandIns

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FRAME_HW = (240, 320)
FACE_SCALE = 0.45  # face box side / frame height in dva.samples
CLIPS = {"astronaut.mp4": ("astronaut", 6), "grace.mp4": ("grace_hopper", 5)}
SMALL_UNET = ["model.unet.model_channels=32", "model.unet.channel_mult=[1,1,1,1,1,1]", "model.unet.num_res_blocks=1"]
JOB_TIMEOUT_S = 1500

def _face_box() -> tuple[float, float, float, float]:
    """The still head of a `motion=0` sample clip: a box FACE_SCALE × height wide at the frame centre."""
    h, w = FRAME_HW
    half = FACE_SCALE * h / 2
    return (w / 2 - half, h / 2 - half, w / 2 + half, h / 2 + half)


@pytest.fixture(scope="module")
def rehearsal(s3_server, tmp_path_factory):
    """A new S3 bucket with the clips and the stand-in weights the cluster presets name; the env of a process in the
    cluster image; and the overrides that point the presets at those weights."""
    s3_bucket = s3_server.make_bucket()
    work = tmp_path_factory.mktemp("rehearsal")
    fs = s3fs.S3FileSystem()
    for name, (person, frames) in CLIPS.items():
        clip = make_sample_clip(work / name, person, frames=frames, size=FRAME_HW[::-1], motion=0.0,
                                face_scale=FACE_SCALE)
        fs.put(clip, f"{s3_bucket}/videos/{name}")
    nodlib = without_dlib_folder(work / "nodlib")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(nodlib), str(REPO)]), "HF_HUB_OFFLINE": "1",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}

    standins = StandIns(work / "weights", face_box=_face_box(), frame_hw=FRAME_HW)
    edit = load_job_config(EditJobConfig, "cluster_gpu", ["input=x", "output=y", "random_weights=true"])
    preprocess = load_preprocess_config("cluster", ["input=x", "output=y"])
    train = load_train_config("dva256_8gpu", ["data.path=x", "storage_path=y"])
    overrides = []
    for items in (standins.overrides(edit.model, "model."), standins.overrides(edit.face, "face."),
                  standins.overrides(preprocess.model, "model."), standins.overrides(preprocess.face, "face."),
                  standins.overrides(train.model, "model.")):
        overrides += [item for item in items if item not in overrides]
    # The weights live in object storage too, as the presets' comments show them.
    remote = []
    for item in overrides:
        key, path = item.split("=", 1)
        uri = f"{s3_bucket}/models/{Path(path).name}"
        if not fs.exists(uri):
            fs.put(path, uri)
        remote.append(f"{key}={uri}")
    with _ray_head(env) as address:
        yield {"bucket": s3_bucket, "env": {**env, "RAY_ADDRESS": address}, "weights": remote, "fs": fs,
               "edit": edit}


@contextlib.contextmanager
def _ray_head(env: dict):
    """A Ray head of its own on loopback (`ray start --block`) whose workers get `env`; yields its address.

    Jobs are pointed at it by RAY_ADDRESS: a bare `ray.init()` would join whatever cluster another process on this
    machine last started, with other workers' environment. Stopped by signalling the process that started it.
    """
    temp_dir = tempfile.mkdtemp(prefix="rayrh-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={port}", "--num-cpus=2", f"--resources={json.dumps(custom_resources(gpu_pod()))}",
           "--include-dashboard=false", "--disable-usage-stats",
           f"--temp-dir={temp_dir}", *(f"--{flag}={free_port()}" for flag in (
               "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
               "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port"))]
    log_path = Path(temp_dir) / "ray-start.log"
    with open(log_path, "wb") as log:
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            assert head.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def _only(prefixes: tuple[str, ...], overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.startswith(prefixes)]


def _run(job: str, preset: str, overrides: list[str], env: dict) -> str:
    cmd = [sys.executable, f"jobs/{job}.py", "--config", preset, *overrides]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    log = f"$ {' '.join(cmd)}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, log
    return log


def test_dlib_is_unimportable_in_the_driver_and_in_ray_workers(rehearsal):
    probe = textwrap.dedent("""\
        import importlib, ray
        from dva.runtime.cluster import init_ray

        def imports(name):
            try:
                importlib.import_module(name)
            except ImportError:
                return False
            return True

        init_ray(progress=False)
        workers = ray.get([ray.remote(imports).remote(n) for n in ("dlib", "face_recognition_models", "torch")])
        print("driver", [imports(n) for n in ("dlib", "face_recognition_models", "torch")], "workers", workers)
    """)
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=rehearsal["env"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "driver [False, False, True] workers [False, False, True]" in done.stdout, done.stdout + done.stderr


def test_cluster_presets_edit_preprocess_and_train_without_dlib(rehearsal):
    bucket, env, weights, fs = rehearsal["bucket"], rehearsal["env"], rehearsal["weights"], rehearsal["fs"]
    logs = []

    # The edit job, stages A, B and C as cluster_gpu configures them, on one actor each with half a core.
    edit_out = f"{bucket}/edits"
    # The front end's networks run on CPU here (cluster_gpu gives them a GPU share).
    face_on_cpu = f"face.{rehearsal['edit'].face.backend}.device=cpu"
    logs.append(_run("edit", "cluster_gpu", [
        f"input={bucket}/videos/", f"output={edit_out}", "steps=3", "progress=false", *SMALL_UNET,
        "random_weights=true", *_only(("model.", "face."), weights),
        "frontend.actors=1", "frontend.min_actors=1", "frontend.num_cpus=0.5", "frontend.num_gpus=0",
        face_on_cpu, "generate.actors=1", "generate.min_actors=1", "generate.num_cpus=0.5", "generate.num_gpus=0",
        "generate.compile=false",  # inductor on CPU would compile for minutes; the GPU path is what it is for
        "writer.num_cpus=0.5",
    ], env))
    manifest = read_manifest(edit_out).to_pylist()
    assert sorted(r["video"].rsplit("/", 1)[-1] for r in manifest) == sorted(CLIPS), logs[-1]
    assert all(r["status"] == "ok" and r["random_weights"] for r in manifest), (manifest, logs[-1])
    assert "[dva] warning: random_weights=true" in logs[-1]
    for row in manifest:
        assert row["frames"] == CLIPS[row["video"].rsplit("/", 1)[-1]][1]

    # Training shards from the same videos, with the same encoders.
    data = f"{bucket}/data"
    logs.append(_run("preprocess", "cluster", [
        f"input={bucket}/videos/", f"output={data}", "progress=false",
        *_only(("model.", "face."), weights),
        "frontend.actors=1", "frontend.min_actors=1", "frontend.num_cpus=1",
    ], env))
    shards = list_shards(data)
    assert len(shards) == len(CLIPS), logs[-1]
    rows = sum(pq.read_metadata(fs.open(s.removeprefix("s3://"))).num_rows for s in shards)
    assert rows == sum(frames for _, frames in CLIPS.values())

    # One optimiser step of the 8-GPU recipe on one CPU worker, over those shards, checkpointed to S3.
    runs = f"{bucket}/runs"
    logs.append(_run("train", "dva256_8gpu", [
        f"data.path={data}", f"storage_path={runs}", "name=rehearsal", "steps=1", "progress=false", *SMALL_UNET,
        *_only(("model.",), weights),
        "scaling.num_workers=1", "scaling.use_gpu=false", "scaling.backend=gloo",
        "scaling.resources_per_worker.CPU=1", "scaling.resources_per_worker.GPU=0", "samples.steps=2",
    ], env))
    found = re.search(r"model\.checkpoint=(\S+)", logs[-1])
    assert found and "[dva] step 1;" in logs[-1], logs[-1]
    assert fs.exists(found.group(1)), logs[-1]
