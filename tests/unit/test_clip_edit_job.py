"""CLIP edits in the edit job's config: the `clip_edit` section, and the errors a user meets before Ray starts."""

from __future__ import annotations

import json

import pytest

import dva.pipeline.edit_job as edit_job
from dva.editing.clip_direction import direction_settings
from dva.errors import ConfigError, MissingWeightsError
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_resolution import parse_job_edits

SPEC = 'clip:"face":"face with beard":0.5'


def job(tmp_path, *overrides):
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    (inputs / "a.mp4").write_bytes(b"never decoded: the job stops before Ray")
    return load_job_config(EditJobConfig, "local_tiny", ["random_weights=true", f"input={inputs}",
                                                         f"output={tmp_path / 'out'}", *overrides])


@pytest.fixture
def no_ray(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the job got past its start-up checks")

    monkeypatch.setattr(edit_job, "_run", must_not_run)
    monkeypatch.setattr(edit_job, "_run_clip_edits_beside_inversion", must_not_run)


def test_clip_preset_sits_under_clip_edit_with_overrides_and_prefixed_errors(tmp_path):
    cfg = job(tmp_path, "clip_edit.iterations=7", "clip_edit.loss_weights.clip=2.5")
    assert cfg.clip_edit_preset == "clip" and cfg.clip_edit.clip.name == "ViT-B-16-quickgelu"
    assert cfg.clip_edit.iterations == 7 and cfg.clip_edit.loss_weights.clip == 2.5 and cfg.clip_edit.lr == 0.002
    assert cfg.clip_edit.output_prefix is None  # the job's default: <output>/.directions
    yaml = tmp_path / "fast_clip.yaml"
    yaml.write_text("iterations: 3\nframes: [0, 2]\n")
    assert job(tmp_path, f"clip_edit_preset={yaml}").clip_edit.frames == [0, 2]
    with pytest.raises(ConfigError, match=r"config key `clip_edit\.lr`"):
        job(tmp_path, "clip_edit.lr=0")
    with pytest.raises(ConfigError, match="no edit_methods preset named 'nope'"):
        job(tmp_path, "clip_edit_preset=nope")
    assert parse_job_edits([SPEC, "reconstruct"]) == [SPEC, "reconstruct"]  # accepted, no longer refused


def test_clip_task_resources_are_their_own_block_and_validated(tmp_path):
    cfg = job(tmp_path, "clip_task.num_gpus=0.5", "clip_task.resources.clip_node=1")
    assert (cfg.clip_task.num_cpus, cfg.clip_task.num_gpus) == (1.0, 0.5)
    assert cfg.clip_task.resources == {"clip_node": 1.0} and cfg.frontend.num_gpus == 0
    # Where the task runs does not change the direction: the cache key ignores the block.
    assert direction_settings(cfg.clip_edit) == direction_settings(job(tmp_path).clip_edit)
    for override, key in (("clip_task.num_gpus=1.5", "num_gpus"), ("clip_task.num_cpus=-1", "num_cpus"),
                          ("clip_task.resources.clip_node=-2", r"resources\.clip_node")):
        with pytest.raises(ConfigError, match=rf"config key `clip_task\.{key}`"):
            job(tmp_path, override)


def test_clip_edit_without_weights_names_the_key_before_ray_starts(tmp_path, no_ray):
    with pytest.raises(ConfigError, match=r"config key `clip_edit\.clip\.weights`.*set clip_edit\.clip\.weights="):
        edit_job.run_edit_job(job(tmp_path, f"edits=[{SPEC}]"))
    with pytest.raises(MissingWeightsError, match=r"missing\.bin.*config key `clip_edit\.clip\.weights`"):
        edit_job.run_edit_job(job(tmp_path, f"edits=[{SPEC}]", f"clip_edit.clip.weights={tmp_path / 'missing.bin'}"))


def test_a_clip_edit_listed_only_in_an_input_manifest_is_checked_too(tmp_path, no_ray):
    cfg = job(tmp_path, "edits=[reconstruct]")
    manifest = tmp_path / "in" / "videos.jsonl"
    manifest.write_text(json.dumps({"uri": "a.mp4", "edits": [SPEC]}) + "\n")
    cfg.input = str(manifest)
    with pytest.raises(ConfigError, match=r"clip_edit\.clip\.weights"):
        edit_job.run_edit_job(cfg)
    cfg.input = str(tmp_path / "in")  # the same job without clip edits needs no CLIP weights
    with pytest.raises(AssertionError, match="start-up checks"):
        edit_job.run_edit_job(cfg)


def test_edit_arguments_add_specs_as_written(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    base = [f"input={inputs}", f"output={tmp_path / 'out'}", "random_weights=true"]
    cfg = edit_job.job_config_from_arguments("local_tiny",
                                             [*base, f"edit={SPEC}", "edit=classifier:Smiling:1.5,Young:-1"])
    assert cfg.edits == parse_job_edits([SPEC, "classifier:Smiling:1.5,Young:-1"])
    assert edit_job.job_config_from_arguments("local_tiny", base).edits == ["reconstruct"]  # the preset's
    with pytest.raises(ConfigError, match="not both"):
        edit_job.job_config_from_arguments("local_tiny", [*base, "edit=reconstruct", "edits=[reconstruct]"])
    with pytest.raises(ConfigError, match="edits"):
        edit_job.job_config_from_arguments("local_tiny", [*base, "edit=clip:face"])
