"""Cluster specs under cluster/: they parse, use KubeRay's current API (ray.io/v1, in-tree autoscaling) and the
Ray launcher's schema, agree with each other and with the job presets (every resource a stage asks for is offered
by a node type, a GPU pod's places add up), keep secrets out, and every job they submit names an entrypoint script
and a `--config` preset that exist in this repo."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from cluster_pods import custom_resources, worker_groups
from dva.evaluation.config import load_eval_config
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.train.config import load_preprocess_config, load_train_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
AWS = CLUSTER / "aws" / "cluster.yaml"
SPEC_FILES = sorted(CLUSTER.rglob("*.yaml"))
RAYJOB_FILES = sorted(KUBERAY.glob("rayjob-*.yaml"))
# jobs/<script>.py takes `--config NAME` from configs/<group>/NAME.yaml, loaded and validated as the job does
CONFIG_GROUP = {"edit": "edit", "train": "train", "preprocess": "preprocess", "eval": "eval"}
CONFIG_LOADER = {"edit": lambda preset, overrides: load_job_config(EditJobConfig, preset, overrides),
                 "train": load_train_config, "preprocess": load_preprocess_config, "eval": load_eval_config}

# Fields of KubeRay's ray.io/v1 types (ray-operator/apis/ray/v1): a misspelt field is silently pruned by the API
# server, so the cluster would start without it (no autoscaler, default replicas, ...).
RAYCLUSTER_SPEC = {"rayVersion", "authOptions", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec",
                   "workerGroupSpecs", "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions", "managedBy"}
AUTOSCALER_OPTIONS = {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext",
                      "idleTimeoutSeconds", "upscalingMode", "version"}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "suspend", "numOfHosts",
                "rayStartParams", "template", "scaleStrategy"}
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML",
               "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
               "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule"}
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.I)


def docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kuberay_docs() -> list[dict]:
    return [d for p in sorted(KUBERAY.glob("*.yaml")) for d in docs(p)]


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def quantity(value) -> float:
    """A Kubernetes CPU/GPU quantity ("8", "500m", 1) as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# vCPUs and GPUs of the launcher's instance types, as EC2 states them (the launcher asks the EC2 API at `ray up`)
INSTANCE_TYPES = {"m6i.2xlarge": {"CPU": 8}, "c6i.4xlarge": {"CPU": 16}, "g6e.4xlarge": {"CPU": 16, "GPU": 1},
                  "p4d.24xlarge": {"CPU": 96, "GPU": 8}}


def aws_node_types() -> dict[str, dict]:
    """The launcher's worker node types as `worker_groups` gives KubeRay's: detected resources plus declared ones."""
    (config,) = docs(AWS)
    return {name: {"resources": {**INSTANCE_TYPES[t["node_config"]["InstanceType"]], **t.get("resources", {})},
                   "max_workers": t["max_workers"]}
            for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def node_types(cluster: str) -> dict[str, dict]:
    """The worker node types of the shared KubeRay cluster (`kuberay`) or of the launcher's (`aws`)."""
    return worker_groups(docs(KUBERAY / "raycluster.yaml")[0]["spec"]) if cluster == "kuberay" else aws_node_types()


def ray_pin() -> str:
    return re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)


def project_version() -> str:
    return re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def entrypoint(job: dict) -> tuple[str, str, list[str]]:
    """(script, config preset, overrides) of a RayJob's `python jobs/<x>.py --config NAME key=value ...`."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith("jobs/"), argv
    rest = argv[2:]
    assert rest[0] == "--config", f"{argv[1]}: name the preset with --config"
    return argv[1], rest[1], rest[2:]


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_spec_parses(path):
    parsed = docs(path)
    assert parsed and all(isinstance(d, dict) for d in parsed)


def test_the_specs_are_all_there():
    names = {str(p.relative_to(CLUSTER)) for p in SPEC_FILES}
    assert {"kuberay/raycluster.yaml", "kuberay/rayjob-preprocess.yaml", "kuberay/rayjob-train.yaml",
            "kuberay/rayjob-edit.yaml", "aws/cluster.yaml"} <= names
    assert (CLUSTER / "Dockerfile").is_file()


@pytest.mark.parametrize("doc", kuberay_docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_kuberay_clusters_autoscale_with_the_current_api(doc):
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayCluster", "RayJob")
    spec = cluster_spec(doc)
    assert set(spec) <= RAYCLUSTER_SPEC, set(spec) - RAYCLUSTER_SPEC
    assert spec["rayVersion"] == ray_pin()
    assert spec["enableInTreeAutoscaling"] is True
    options = spec["autoscalerOptions"]
    assert set(options) <= AUTOSCALER_OPTIONS, set(options) - AUTOSCALER_OPTIONS
    assert options["upscalingMode"] in ("Default", "Aggressive", "Conservative")
    assert isinstance(options["idleTimeoutSeconds"], int) and options["idleTimeoutSeconds"] > 0

    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP and head["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert {"gpu", "cpu"} <= set(groups)
    for name, group in groups.items():
        assert set(group) <= WORKER_GROUP, (name, set(group) - WORKER_GROUP)
        assert isinstance(group["minReplicas"], int) and isinstance(group["maxReplicas"], int)
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], name
        for params in (head["rayStartParams"], group["rayStartParams"]):
            assert all(isinstance(v, str) for v in params.values()), params  # KubeRay wants strings
    assert groups["gpu"]["minReplicas"] == 0  # no idle GPU bill
    gpu_resources = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert quantity(gpu_resources["limits"]["nvidia.com/gpu"]) >= 1
    pods = worker_groups(spec)  # as KubeRay's autoscaler reads them: a malformed `resources` parameter raises here
    assert pods["gpu"]["resources"]["GPU"] >= 1 and "GPU" not in pods["cpu"]["resources"]
    # Ray is told fewer CPUs than the pod has, never more: the rest is for Ray's own processes
    assert pods["gpu"]["resources"]["CPU"] <= quantity(gpu_resources["limits"]["cpu"])
    assert {c["image"] for c in containers(spec)} == {f"123456789012.dkr.ecr.us-west-2.amazonaws.com/dva:"
                                                      f"{project_version()}"}


@pytest.mark.parametrize("path", RAYJOB_FILES, ids=lambda p: p.name)
def test_rayjobs_clean_up_retry_and_run_on_the_shared_cluster_spec(path):
    (job,) = docs(path)
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and {".venv", ".git"} <= set(runtime_env["excludes"])
    assert all(isinstance(v, str) for v in runtime_env["env_vars"].values())

    def without_replicas(cluster: dict) -> dict:
        groups = [{k: v for k, v in g.items() if not k.endswith(("replicas", "Replicas"))}
                  for g in cluster["workerGroupSpecs"]]
        return {**cluster, "workerGroupSpecs": groups}

    (shared,) = docs(KUBERAY / "raycluster.yaml")
    assert without_replicas(spec["rayClusterSpec"]) == without_replicas(shared["spec"])


@pytest.mark.parametrize("path", RAYJOB_FILES, ids=lambda p: p.name)
def test_rayjob_entrypoints_name_scripts_and_presets_that_exist(path):
    (job,) = docs(path)
    script, preset, overrides = entrypoint(job)
    assert (REPO / script).is_file(), f"{path.name}: {script} does not exist"
    stem = Path(script).stem
    assert stem in CONFIG_GROUP, f"{path.name}: no config group known for {script}"
    config = REPO / "configs" / CONFIG_GROUP[stem] / f"{preset}.yaml"
    assert config.is_file(), f"{path.name}: --config {preset} means {config.relative_to(REPO)}, which does not exist"
    assert all(re.fullmatch(r"[A-Za-z_][\w.]*=\S.*", o) for o in overrides), overrides


@pytest.mark.parametrize("path", RAYJOB_FILES, ids=lambda p: p.name)
def test_rayjob_overrides_pass_the_typed_config_and_point_at_object_storage(path):
    (job,) = docs(path)
    job_config(job)
    paths = [o.split("=", 1)[1] for o in entrypoint(job)[2] if "/" in o]
    assert paths and all(p.startswith("s3://") for p in paths), paths  # data and weights: never in the image


def job_config(job: dict):
    """The job's config, loaded and validated as its script does: a misspelt key or bad value raises ConfigError."""
    script, preset, overrides = entrypoint(job)
    return CONFIG_LOADER[Path(script).stem](preset, overrides)


def request(task) -> dict[str, float]:
    """What one actor or task of a `TaskConfig` holds on its node, as Ray counts it."""
    options = task.ray_options()
    return {"CPU": options["num_cpus"], "GPU": options["num_gpus"], **options["resources"]}


def demand(job: dict) -> list[dict[str, float]]:
    """The resources of every actor or Train worker the job asks for at full scale."""
    stem, cfg = Path(entrypoint(job)[0]).stem, job_config(job)
    if stem == "train":
        return [{"CPU": 1, **cfg.scaling.resources_per_worker}] * cfg.scaling.num_workers
    pools = [cfg.frontend, cfg.generate] if stem == "edit" else [cfg.frontend]
    # stage C and the CLIP directions run as tasks: at least one of each must find room
    tasks = [cfg.writer, cfg.clip_task] if stem == "edit" else []
    return [request(s) for s in pools for _ in range(s.actors)] + [request(t) for t in tasks]


def fits(bundle: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(name, 0) >= amount - 1e-9 for name, amount in bundle.items() if amount)


def place(bundles: list[dict[str, float]], pods: list[dict[str, float]]) -> list[dict[str, float]]:
    """First-fit of the bundles, largest first, into pods' free resources; returns those that found no room."""
    homeless = []
    for bundle in sorted(bundles, key=lambda b: (b["GPU"], b["CPU"]), reverse=True):
        pod = next((p for p in pods if fits(bundle, p)), None)
        if pod is None:
            homeless.append(bundle)
        else:
            for name, amount in bundle.items():
                pod[name] = pod.get(name, 0) - amount
    return homeless


def full_scale(types: dict[str, dict]) -> list[dict[str, float]]:
    return [dict(t["resources"]) for t in types.values() for _ in range(t["max_workers"])]


@pytest.mark.parametrize("cluster", ["own", "kuberay", "aws"])
@pytest.mark.parametrize("path", RAYJOB_FILES, ids=lambda p: p.name)
def test_job_fits_the_cluster_at_full_scale(path, cluster):
    """Every actor / Train worker of the job's preset fits in the worker groups at maxReplicas, on its RayJob's
    cluster, on the shared RayCluster and on the launcher's: otherwise the autoscaler cannot place them and the job
    waits for ever."""
    (job,) = docs(path)
    types = worker_groups(cluster_spec(job)) if cluster == "own" else node_types(cluster)
    assert place(demand(job), full_scale(types)) == []


@pytest.mark.parametrize("cluster", ["kuberay", "aws"])
@pytest.mark.parametrize("path", RAYJOB_FILES, ids=lambda p: p.name)
def test_every_request_of_a_job_fits_some_node_type(path, cluster):
    """Each actor or task the job's preset asks for (custom resources included) fits a node type of the KubeRay
    cluster and of the launcher's: a resource no node type offers would keep the stage waiting for ever."""
    (job,) = docs(path)
    types = node_types(cluster)
    for bundle in demand(job):
        assert any(fits(bundle, t["resources"]) for t in types.values()), (bundle, types)


def edit_job_config():
    (job,) = docs(KUBERAY / "rayjob-edit.yaml")
    return job_config(job)


@pytest.mark.parametrize("node", ["kuberay gpu", "aws gpu_worker"])
def test_a_gpu_pods_places_add_up(node):
    """A GPU node declares a place (custom resource) for each actor or task of the edit job that runs on it, and
    the places' CPUs and GPU shares add up within the node: once every place is taken each holder has its CPUs and
    GPU share, so no start order can leave a pod without its UNet actor (tests/pipeline/test_multinode.py runs the
    worst one on Ray). Without the places it could: stage A alone can fill a pod's CPUs."""
    cluster, name = node.split()
    types = node_types(cluster)
    pod = types[name]["resources"]
    cfg = edit_job_config()
    stages = {"frontend": cfg.frontend, "generate": cfg.generate, "clip_task": cfg.clip_task}
    holders = {slot: key for key, stage in stages.items() for slot in stage.resources}
    assert set(holders) == set(custom_resources(pod)) and len(holders) == len(stages), (holders, pod)
    taken = {"CPU": 0.0, "GPU": 0.0}
    for slot, key in holders.items():
        stage = stages[key]
        assert stage.resources == {slot: 1}, f"{key}: one place per actor or task"
        for kind, amount in request(stage).items():
            if kind in taken:
                taken[kind] += pod[slot] * amount
    assert taken["CPU"] <= pod["CPU"] and taken["GPU"] <= pod["GPU"] + 1e-9, (taken, pod)
    frontend_cpus = pod["CPU"] // cfg.frontend.num_cpus * cfg.frontend.num_cpus
    assert pod["CPU"] - frontend_cpus < cfg.generate.num_cpus  # why the places are needed


def test_kuberay_and_launcher_gpu_nodes_offer_the_same_places():
    kuberay, aws = node_types("kuberay")["gpu"], node_types("aws")["gpu_worker"]
    assert custom_resources(kuberay["resources"]) == custom_resources(aws["resources"])


def test_aws_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    (config,) = docs(AWS)
    validate_config(prepare_config(config))  # the check `ray up` runs first
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0 and "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    gpu_types = [t for t in types.values() if re.match(r"[gp]\d", t["node_config"]["InstanceType"])]
    assert gpu_types and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu_types)
    assert config["max_workers"] == sum(t.get("max_workers", 0) for n, t in types.items() if t is not head)
    assert config["idle_timeout_minutes"] > 0
    (shared,) = docs(KUBERAY / "raycluster.yaml")
    assert config["docker"]["image"] == containers(shared["spec"])[0]["image"]


def test_dockerfile_installs_pinned_as_non_root_without_weights():
    text = (CLUSTER / "Dockerfile").read_text()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.startswith("#")]
    base = next(ln for ln in lines if ln.startswith("FROM "))
    assert re.search(r"gpu|cuda", base), base
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1) == ray_pin()
    installs = [ln for ln in lines if "pip install" in ln]
    assert installs and all(re.search(r"(-c|--constraint) constraints\.txt", ln) for ln in installs), installs
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not re.search(r"\b(curl|wget)\b|^ADD\s+https?://", text, re.M)  # nothing fetched at build time

    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[next(i for i, ln in enumerate(ignore) if not ln.startswith("#"))] == "*"  # allow-list
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    copied = {src.rstrip("/") for ln in lines if ln.startswith("COPY ")
              for src in [w for w in ln.split()[1:] if not w.startswith("--")][:-1]}
    assert copied <= allowed and ".venv" not in allowed
    assert {"**/*.safetensors", "**/*.ckpt", "**/*.pth", "**/*.onnx"} <= set(ignore)


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _walk(child)


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_no_secret_is_written_inline(path):
    text = path.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text)
    for doc in docs(path):
        for node in _walk(doc):
            if isinstance(node, dict) and isinstance(node.get("name"), str) and SECRET_NAME.search(node["name"]):
                assert "value" not in node, f"{path.name}: {node['name']} is inline; use valueFrom/envFrom"
            if isinstance(node, dict) and "runtimeEnvYAML" in node:
                env_vars = yaml.safe_load(node["runtimeEnvYAML"]).get("env_vars", {})
                assert not [k for k in env_vars if SECRET_NAME.search(k)], env_vars
        if doc.get("apiVersion") == "ray.io/v1":  # every Ray pod gets the S3 credentials from the Secret
            for c in containers(cluster_spec(doc)):
                assert {"secretRef": {"name": "dva-s3"}} in c.get("envFrom", []), c["name"]
