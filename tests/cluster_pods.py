"""The worker pods of the KubeRay specs under cluster/kuberay/ and the Ray resources each offers, read by the code
KubeRay's autoscaler reads them with (CPUs from `num-cpus` or the CPU limit, GPUs from the `nvidia.com/gpu` limit,
custom resources from the `resources` start parameter), for the tests that check or simulate them."""

from __future__ import annotations

from pathlib import Path

import yaml

RAYCLUSTER = Path(__file__).resolve().parents[1] / "cluster" / "kuberay" / "raycluster.yaml"
HEAD_GROUP = "headgroup"  # the name Ray's KubeRay config gives the head group


def worker_groups(spec: dict) -> dict[str, dict]:
    """{group name: {"resources": {CPU, GPU, custom...}, "max_workers": n}} of a RayCluster spec's worker groups."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _generate_available_node_types_from_ray_cr_spec

    types = _generate_available_node_types_from_ray_cr_spec(spec)
    return {name: {"resources": {k: v for k, v in t["resources"].items() if k != "memory"},
                   "max_workers": t["max_workers"]}
            for name, t in types.items() if name != HEAD_GROUP}


def gpu_pod() -> dict[str, float]:
    """The Ray resources of one pod of raycluster.yaml's `gpu` group: where cluster_gpu's stages are packed."""
    return worker_groups(yaml.safe_load(RAYCLUSTER.read_text())["spec"])["gpu"]["resources"]


def custom_resources(resources: dict) -> dict[str, float]:
    return {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
