"""Autoscaling and node loss, rehearsed on one machine with simulated Ray nodes (each a raylet of its own).

- The edit job submitted with `ray job submit` to a head that runs no work and an autoscaler with a CPU node type and
  an accelerator-like one (a custom resource `accel` stands in for a GPU; the tiny model runs on the CPU), both
  scaling from 0: Ray's fake multi-node provider, the one `ray.cluster_utils.AutoscalingCluster` drives.
  `AutoscalingCluster.start()` itself is not used: it runs `ray stop --force` (every Ray process on the machine) and
  reads an example YAML that the wheel does not ship, so the head is started here with the same provider.
- Node loss during the edit job and during training, with `ray.cluster_utils.Cluster`: the node holding a stage's
  actor (or a training worker) is removed mid-run, its processes killed, and a replacement node added, as an
  autoscaler would. Stage B is caught with a batch running (the state API, through the head's dashboard).
- The packing of `cluster_gpu` on GPU pods of the KubeRay spec's shape, its actors started in the worst order.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import s3fs

from edit_job_args import job_overrides
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import run_edit_job
from dva.runtime.manifest import read_manifest
from dva.samples import make_sample_clip
from dva.storage import list_files
from dva.train.ray_train import POLL_ENV, run_training
from cluster_pods import gpu_pod
from ray_head import job_env, ray_head, submit
from s3 import free_port
from test_train_job import build_dataset, snapshots, train_cfg

pytestmark = pytest.mark.slow

CLIPS = {"a.mp4": ("astronaut", 5), "b.mp4": ("grace_hopper", 4)}  # name: (person, frames)
IDLE_MINUTES = 0.2  # the autoscaler removes a worker node idle this long


def make_clips(folder: Path) -> Path:
    for i, (name, (person, frames)) in enumerate(CLIPS.items()):
        make_sample_clip(folder / name, person, frames=frames, seed=i)
    return folder


def autoscaling_config(gcs_address: str) -> dict:
    """The fake provider's cluster config: a head with no CPUs, a CPU node type and an `accel` node type, 0-1 each."""
    worker = {"node_config": {}, "min_workers": 0, "max_workers": 1}
    return {
        "cluster_name": "dva-rehearsal", "max_workers": 2, "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_MINUTES,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu": {**worker, "resources": {"CPU": 1}},
            "accel": {**worker, "resources": {"CPU": 1, "accel": 1}},
        },
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def autoscaler_events(temp_dir: Path) -> list[str]:
    """The autoscaler's event lines ("Adding 1 node(s) of type accel.", "Removing 1 nodes of type cpu (idle).")."""
    text = "".join(p.read_text() for p in temp_dir.glob("session_*/logs/monitor.log"))
    return re.findall(r":event_summary:(.*)", text)


def alive_worker_nodes(dashboard_url: str) -> int:
    from ray.util.state import list_nodes

    return sum(n.state == "ALIVE" and not n.is_head_node for n in list_nodes(address=dashboard_url))


def test_autoscaled_job_launches_both_node_types_and_they_go_idle(s3_server, tiny_checkpoint, tmp_path):
    started = time.time()
    port = free_port()
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(autoscaling_config(f"127.0.0.1:{port}")))
    bucket = s3_server.make_bucket()
    fs = s3fs.S3FileSystem()
    fs.put(str(make_clips(tmp_path / "clips")) + "/", f"{bucket}/in/", recursive=True)
    fs.put_file(tiny_checkpoint, f"{bucket}/models/tiny.safetensors")
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    with ray_head(["--num-cpus=0", f"--autoscaling-config={config}"], env, port=port) as (url, _, temp_dir):
        assert alive_worker_nodes(url) == 0
        done = submit(url, job_env(tmp_path), "python", "jobs/edit.py", "--config", "local_tiny",
                      *job_overrides(f"{bucket}/in", f"{bucket}/out", f"{bucket}/models/tiny.safetensors",
                                     "generate.resources={accel: 1}"), timeout=1500)
        assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        assert f"[dva] {len(CLIPS)} ok, 0 failed" in done.stdout
        job_s = time.time() - started
        deadline = time.time() + 300
        while alive_worker_nodes(url) and time.time() < deadline:
            time.sleep(2)
        events = autoscaler_events(temp_dir)
        assert alive_worker_nodes(url) == 0, events  # every worker node removed once idle
    for kind in ("cpu", "accel"):
        # Removed when idle, so it was launched for the job (min_workers is 0). The autoscaler's event summary has
        # been seen to list a node type's removal but not its addition, so the addition is not asserted alone.
        assert any(re.match(rf"Removing \d+ nodes of type {kind} \(idle\)", e) for e in events), events
    rows = read_manifest(f"{bucket}/out").to_pylist()
    assert sorted(r["video"].rsplit("/", 1)[-1] for r in rows) == sorted(CLIPS)
    assert {r["status"] for r in rows} == {"ok"}
    print(f"[multinode] autoscaling: job {job_s:.0f} s, idle scale-down {time.time() - started - job_s:.0f} s")


@pytest.fixture(scope="module")
def cluster(s3_server):  # S3 settings first: the nodes' workers inherit them
    """A head with no CPUs (the driver's node) and one node per edit stage: `front` (stage A and stage C's CPUs)
    and `accel` (stage B); yields the Cluster, its worker nodes by kind and the dashboard URL."""
    import ray
    from ray._common.utils import get_default_ray_temp_dir
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="raymn-", dir="/tmp")  # short: socket paths must fit 107 bytes
    # `Cluster` writes the head's address into Ray's default temp dir (`$RAY_TMPDIR/ray`, else /tmp/ray) without
    # creating it: it exists only if some earlier test's Ray made it.
    Path(get_default_ray_temp_dir()).mkdir(parents=True, exist_ok=True)
    head = dict(num_cpus=0, node_ip_address="127.0.0.1", gcs_server_port=free_port(), include_dashboard=True,
                dashboard_host="127.0.0.1", dashboard_port=(dashboard := free_port()),
                temp_dir=temp_dir, dashboard_agent_listen_port=free_port(), metrics_export_port=free_port(),
                runtime_env_agent_port=free_port(), ray_client_server_port=free_port())
    # No exit hooks: they would make `add_node` work only on the main thread, and the nodes are removed below.
    cluster = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=False)
    nodes = {kind: add_node(cluster, kind) for kind in ("front", "accel")}
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield cluster, nodes, f"http://127.0.0.1:{dashboard}"
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


# `gpu_pod`: a pod of cluster/kuberay/raycluster.yaml's `gpu` group (its CPUs, one GPU as a resource, the places)
NODE_KINDS = {"front": {"CPU": 1, "front": 1}, "accel": {"CPU": 1, "accel": 1}, "trainer": {"CPU": 1, "trainer": 1},
              "gpu_pod": gpu_pod()}
STAGE_RESOURCES = ("frontend.resources={front: 1}", "generate.resources={accel: 1}")


def add_node(cluster, kind: str):
    resources = dict(NODE_KINDS[kind])
    return cluster.add_node(num_cpus=resources.pop("CPU"), num_gpus=resources.pop("GPU", 0), resources=resources,
                            node_ip_address="127.0.0.1", object_store_memory=200 * 1024 * 1024)


def edit_config(clips: Path, out: Path, checkpoint: str, address: str):
    overrides = job_overrides(str(clips), str(out), checkpoint, *STAGE_RESOURCES, "generate.batch_frames=3",
                              f"ray_address={address}")
    return load_job_config(EditJobConfig, "local_tiny", overrides)


def outputs(out: Path) -> dict[str, bytes]:
    """The bytes of every ok output, by input file name; asserts one manifest row per input, no stage-B chunk left
    and no file visible (listed) under `videos/` but the outputs the rows name. A killed writer's temporary may stay
    hidden under a `.partial/` folder: the next job sweeps it once old."""
    rows = read_manifest(str(out)).to_pylist()
    assert sorted(r["video"].rsplit("/", 1)[-1] for r in rows) == sorted(CLIPS), rows  # one row each
    assert {r["status"] for r in rows} == {"ok"}, rows
    assert not [p for p in (out / ".work").rglob("*") if p.is_file()]
    assert sorted(list_files(str(out / "videos"))) == sorted(r["output"] for r in rows)
    return {r["video"].rsplit("/", 1)[-1]: Path(r["output"]).read_bytes() for r in rows}


@pytest.fixture(scope="module")
def clean_run(cluster, tiny_checkpoint, tmp_path_factory):
    c, _, _ = cluster
    root = tmp_path_factory.mktemp("clean")
    clips = make_clips(root / "clips")
    summary = run_edit_job(edit_config(clips, root / "out", tiny_checkpoint, c.address))
    assert summary.ok == len(CLIPS) and summary.failed == 0
    return clips, outputs(root / "out")


def stage_b_has_output(out: Path) -> bool:
    return any((out / ".work").rglob("*.npy")) if (out / ".work").exists() else False


def stage_running(dashboard_url: str, stage: str) -> bool:
    """Whether a batch of the stage's Ray Data actors (`PrepareStage`, `GenerateStage`) is being processed now."""
    from ray.util.state import list_tasks

    tasks = list_tasks(address=dashboard_url, filters=[("state", "=", "RUNNING")], raise_on_missing_output=False)
    return any(f"MapBatches({stage})).submit" in t.name for t in tasks)


class NodeLoss(threading.Thread):
    """Once `happening()` is true, removes `nodes[kind]` with its processes killed (a preemption) and adds a fresh
    node of that kind in its place (an autoscaler's replacement). `state()` is recorded at that moment."""

    def __init__(self, cluster, nodes: dict, kind: str, happening, state=lambda: None):
        super().__init__(daemon=True)
        self.cluster, self.nodes, self.kind, self.happening, self.state = cluster, nodes, kind, happening, state
        self.started = time.time()
        self.after_s = None  # seconds from start to the loss
        self.lost_node_id = None
        self.state_then = None
        self.error = None

    def run(self):
        try:
            deadline = self.started + 600
            while not self.happening():
                if time.time() > deadline:
                    return
                time.sleep(0.05)
            self.state_then = self.state()
            self.lost_node_id = self.nodes[self.kind].node_id
            self.cluster.remove_node(self.nodes[self.kind], allow_graceful=False)
            self.after_s = time.time() - self.started
            self.nodes[self.kind] = add_node(self.cluster, self.kind)
        except Exception as err:  # reported by the test
            self.error = err

    def check(self) -> None:
        self.join(timeout=120)
        assert self.error is None, repr(self.error)
        assert self.after_s is not None, f"the {self.kind} node was never removed: its work was not seen running"


def stage_b_in_flight(url: str, out: Path):
    """A chunk went through stage B and a stage-B batch is being processed: more chunks are in flight."""
    return lambda: stage_b_has_output(out) and stage_running(url, "GenerateStage")


def stage_a_holds_its_node(url: str, out: Path):
    """This job's stage-A actor holds the `front` node (it was seen free first: an earlier job's actor may still be
    going) and no chunk has reached stage B yet: the actor is starting or on the first video. A stage-A batch (one
    short clip) is too quick to catch as a running task under the state API's reporting delay."""
    import ray

    seen_free = False

    def holds() -> bool:
        nonlocal seen_free
        held = ray.available_resources().get("front", 0) == 0
        seen_free = seen_free or not held
        return seen_free and held and not stage_b_has_output(out)

    return holds


@pytest.mark.parametrize("kind, when", [("accel", stage_b_in_flight), ("front", stage_a_holds_its_node)],
                         ids=["stage-B-node", "stage-A-node"])
def test_a_lost_node_loses_nothing(cluster, clean_run, tiny_checkpoint, tmp_path, kind, when):
    c, nodes, url = cluster
    clips, reference = clean_run
    out = tmp_path / "out"
    loss = NodeLoss(c, nodes, kind, when(url, out),
                    lambda: len(read_manifest(str(out))) if (out / "manifest").exists() else 0)
    loss.start()
    summary = run_edit_job(edit_config(clips, out, tiny_checkpoint, c.address))
    loss.check()
    assert loss.state_then < len(CLIPS)  # the job was still working when the node went
    assert summary.ok == len(CLIPS) and summary.failed == 0, summary.failures  # each (video, edit) counted once
    assert outputs(out) == reference  # byte-identical to the clean run's
    print(f"[multinode] lost the {kind} node after {loss.after_s:.0f} s; job "
          f"{time.time() - loss.started:.0f} s")


def train_workers(dashboard_url: str) -> list[tuple[str, str]]:
    """(node id, state) of every Ray Train worker actor the cluster has seen."""
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard_url, detail=True, raise_on_missing_output=False)
    return [(a.node_id, a.state) for a in actors if a.class_name == "RayTrainWorker"]


def test_training_resumes_on_a_new_node_with_every_step_once(cluster, s3_server, monkeypatch):
    """Two Ray Train workers on two nodes (gloo); one node is removed after the first checkpoint and a fresh one
    added: the run restarts its workers from the last checkpoint in S3 and ends with every step done once."""
    c, _, url = cluster
    steps = 24
    # Each step's report waits for the controller's next poll: 0.5 s per step leaves the run going for seconds after
    # its first checkpoint, whatever the machine's load, so the node goes mid-run.
    monkeypatch.setenv(POLL_ENV, "0.5")
    bucket = s3_server.make_bucket()
    runs = f"{bucket}/runs"
    cfg = train_cfg(f"{bucket}/data", runs, "lost-node", steps, "scaling.resources_per_worker={CPU: 1, trainer: 1}",
                    f"ray_address={c.address}")
    build_dataset(cfg.data.path, cfg)
    kept, trainers = add_node(c, "trainer"), {"trainer": add_node(c, "trainer")}
    fs = s3fs.S3FileSystem()

    def checkpointed() -> bool:
        """Ray Train has registered a checkpoint (its manager's state is written after that): a checkpoint folder
        alone is not enough, as one whose report the controller has not taken yet is not resumed from."""
        fs.invalidate_cache()
        return fs.exists(f"{runs}/lost-node/checkpoint_manager_snapshot.json")

    loss = NodeLoss(c, trainers, "trainer", checkpointed)
    loss.start()
    try:
        result = run_training(cfg)
        loss.check()
    finally:
        for node in (kept, trainers["trainer"]):
            c.remove_node(node)
    assert result.error is None
    snaps = snapshots(result)
    assert snaps[-1][0] == steps
    log_steps = [entry["step"] for _, _, meta in snaps for entry in meta["log"]]
    assert log_steps == list(range(1, steps + 1)), log_steps  # the final weights' lineage: no step lost or repeated
    resumed = [meta["resumed"] for _, _, meta in snaps if meta["resumed"]]
    ran_s = time.time() - loss.started
    assert resumed, (f"no restart: node {loss.lost_node_id} lost after {loss.after_s:.1f} s of a {ran_s:.1f} s run; "
                     f"checkpoints {[s[0] for s in snaps]}; train workers {train_workers(url)}")
    assert resumed[0]["step"] > 0 and resumed[0]["step"] % cfg.checkpoint_every == 0  # from a checkpoint
    print(f"[multinode] training: node lost after {loss.after_s:.0f} s, resumed at step {resumed[0]['step']}, "
          f"run {time.time() - loss.started:.0f} s")


GPU_PODS = 2


def test_every_gpu_pod_runs_its_unet_actor_after_the_worst_start_order(cluster):
    """`cluster_gpu`'s actors on two GPU pods, each asking for exactly its preset's Ray resources, started in the
    worst order for the UNet: as many stage-A actors as the pods' CPUs could hold, then more CLIP tasks than there
    are pods (actors here, holding the same resources), and only then the UNet actors. Each pod still runs its UNet
    actor, beside its stage-A actors and one CLIP task; the stage-A actors and CLIP tasks left over wait."""
    import ray

    c, _, _ = cluster
    cfg = load_job_config(EditJobConfig, "cluster_gpu", ["input=s3://b/in", "output=s3://b/out",
                                                         "model.checkpoint=s3://b/m.safetensors"])
    pod = NODE_KINDS["gpu_pod"]
    pods = [add_node(c, "gpu_pod") for _ in range(GPU_PODS)]

    @ray.remote
    class Holder:  # holds its stage's resources; says where it runs
        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    holders, left_over = [], []

    def start(stage, count: int, placed: int) -> list[str]:
        """`count` holders of the stage's resources; waits for the first `placed` and returns their nodes."""
        actors = [Holder.options(**stage.ray_options()).remote() for _ in range(count)]
        holders.extend(actors)
        refs = [a.node.remote() for a in actors]
        ready, waiting = ray.wait(refs, num_returns=placed, timeout=180)
        assert len(ready) == placed, f"{len(ready)} of {count} started, {placed} expected"
        left_over.extend(waiting)
        return ray.get(ready)

    try:
        frontend = start(cfg.frontend, GPU_PODS * int(pod["CPU"] // cfg.frontend.num_cpus),
                         GPU_PODS * int(pod["frontend_slot"]))
        clip = start(cfg.clip_task, GPU_PODS * 2, GPU_PODS * int(pod["clip_slot"]))
        unet = start(cfg.generate, GPU_PODS, GPU_PODS)
        ids = {p.node_id for p in pods}
        assert sorted(unet) == sorted(ids)  # one UNet actor on every pod
        assert {n: frontend.count(n) for n in ids} == {n: pod["frontend_slot"] for n in ids}
        assert sorted(clip) == sorted(ids)
        assert ray.wait(left_over, num_returns=len(left_over), timeout=2)[0] == []  # beyond the places: waiting
    finally:
        for actor in holders:
            ray.kill(actor)
        for node in pods:
            c.remove_node(node)
