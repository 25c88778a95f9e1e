"""The CLIP direction task asks Ray for the `clip_task` resources, not for stage A's (`frontend`) resources."""

from __future__ import annotations

import os

import pytest

import dva.pipeline.stages as stages
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import clip_task


@pytest.fixture(scope="module")
def ray_with_a_clip_node():
    """A local Ray whose only node offers a custom resource that nothing but the CLIP task asks for."""
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(num_cpus=2, resources={"clip_node": 1}, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_clip_task_is_submitted_with_its_own_resources(ray_with_a_clip_node, tmp_path, monkeypatch):
    ray = ray_with_a_clip_node
    cfg = load_job_config(EditJobConfig, "local_tiny", [
        f"input={tmp_path}", f"output={tmp_path / 'out'}", "random_weights=true", "frontend.num_cpus=0.5",
        "clip_task.num_cpus=0.25", "clip_task.resources.clip_node=1"])

    def assigned_resources(cfg, task):  # stands in for the optimisation: reports what Ray gave the task
        return ray.get_runtime_context().get_assigned_resources()

    monkeypatch.setattr(stages, "optimise_video_clip_edits", assigned_resources)
    assigned = ray.get(clip_task(ray, cfg).remote(cfg, None), timeout=120)
    assert assigned == {"CPU": 0.25, "clip_node": 1.0}
