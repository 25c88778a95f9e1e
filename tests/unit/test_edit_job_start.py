"""What the edit job does before Ray starts: sweeping the temporaries that killed writers left in the output,
checking the stages' resource requests, and checking every weight file (a checkpoint against the model too)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dva.pipeline.edit_job as edit_job
from dva.config import load_config
from dva.errors import ConfigError
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.checkpoint import write_checkpoint
from dva.models.config import ModelConfig
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config

DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "demo64.safetensors"


@pytest.fixture
def job(tmp_path, monkeypatch):
    passes = []
    monkeypatch.setattr(edit_job, "_run", lambda cfg, tasks, summary, clip_edits, **kw: passes.append(tasks))
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.mp4").write_bytes(b"not decoded: the pipeline pass is replaced")

    def make(*overrides):
        return load_job_config(EditJobConfig, "local_tiny", ["random_weights=true", f"input={inputs}",
                                                             f"output={tmp_path / 'out'}", *overrides])
    return make, passes


def _partial(folder, name: str, age_s: float):
    path = folder / ".partial" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half")
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_old_temporaries_are_swept_at_start_and_young_ones_kept(job, tmp_path):
    make, passes = job
    old = _partial(tmp_path / "out" / "videos" / "a.mp4", "killed", age_s=7 * 3600)
    young = _partial(tmp_path / "out" / "latents" / "a", "writing", age_s=60)
    edit_job.run_edit_job(make())
    assert not old.exists() and young.exists() and len(passes) == 1
    edit_job.run_edit_job(make("sweep_partials_after_s=30"))
    assert not young.exists()


def test_sweeping_can_be_turned_off_and_a_negative_age_is_refused(job, tmp_path):
    make, _ = job
    old = _partial(tmp_path / "out" / "videos", "killed", age_s=7 * 3600)
    edit_job.run_edit_job(make("sweep_partials_after_s=null"))
    assert old.exists()
    with pytest.raises(ConfigError, match="sweep_partials_after_s"):
        make("sweep_partials_after_s=-1")


def test_stage_custom_resources_are_checked_and_requested(job):
    make, _ = job
    cfg = make("generate.resources={accel: 1}", "writer.resources={fast_disk: 0.5}")
    assert cfg.generate.ray_options() == {"num_cpus": 1.0, "num_gpus": 0.0, "resources": {"accel": 1.0}}
    assert cfg.writer.ray_options()["resources"] == {"fast_disk": 0.5} and cfg.frontend.ray_options()["resources"] == {}
    for bad, key in (("generate.resources={GPU: 1}", "generate.resources.GPU"),
                     ("frontend.resources={accel: 0}", "frontend.resources.accel")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            make(bad)


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _missing(tmp_path):
    return str(tmp_path / "nonexistent.safetensors")


def _damaged(tmp_path):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(b"not a safetensors file")
    return str(path)


def _unsafe_pickle(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": _RunsCode(str(tmp_path / "code_ran"))}, path)
    return str(path)


def _tiny_checkpoint(tmp_path, change) -> str:
    """A checkpoint of the `tiny` model (the local_tiny job's) whose trained tensors `change` alters."""
    model = DiffusionVideoAutoencoder(load_config(ModelConfig, "tiny", group="model"))
    path = tmp_path / "tiny.safetensors"
    write_checkpoint(path, model, change(dict(model.trainable_state_dict())))
    return str(path)


def _of_another_model(tmp_path):
    return str(DEMO_CHECKPOINT)  # the demo64 model's: 64² crops, other widths


def _missing_key(tmp_path):
    return _tiny_checkpoint(tmp_path, lambda state: {k: v for k, v in state.items() if k != "z_face.weight"})


def _extra_key(tmp_path):
    return _tiny_checkpoint(tmp_path, lambda state: {**state, "unet.extra.weight": torch.zeros(2)})


@pytest.mark.parametrize("key,make,detail", [
    ("model.checkpoint", _missing, "does not exist"), ("face.dlib.predictor", _missing, "does not exist"),
    ("model.checkpoint", _damaged, "not a readable safetensors file"), ("model.checkpoint", _unsafe_pickle, "expected"),
    ("model.checkpoint", _of_another_model, "does not fit model config 'tiny' (the file was made for model config "
                                            "'demo64'): `unet."),
    ("model.checkpoint", _missing_key, "`z_face.weight` is missing from the file (missing keys: 1)"),
    ("model.checkpoint", _extra_key, "`unet.extra.weight` is not in the model (unexpected keys: 1)"),
], ids=["missing-checkpoint", "missing-predictor", "damaged-checkpoint", "unsafe-pickle", "checkpoint-of-another-size",
        "checkpoint-missing-a-key", "checkpoint-with-an-extra-key"])
def test_a_bad_weight_file_is_one_error_before_ray_starts(tmp_path, key, make, detail):
    """Not hundreds of lines of Ray tracebacks from every stage actor: the CLI prints one error naming the file, the
    key and what is wrong (for a checkpoint that loads but does not fit the model, the first mismatch), and exits
    with the CLI's error code; nothing of an unsafe pickle runs."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.mp4").write_bytes(b"never decoded")
    weights = make(tmp_path)
    untrained = [] if key == "model.checkpoint" else ["random_weights=true"]
    proc = subprocess.run([sys.executable, "-m", "dva.cli", "edit", "--config", "local_tiny", f"input={inputs}",
                           f"output={tmp_path / 'out'}", f"{key}={weights}", "progress=false", *untrained],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert proc.stderr.startswith("dva edit: error: ") and proc.stderr.count("error:") == 1, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert weights in first and f"`{key}`" in first and detail in first, first
    assert "Traceback" not in proc.stdout + proc.stderr and "ray" not in proc.stderr.lower()
    assert not (tmp_path / "out").exists() and not (tmp_path / "code_ran").exists()
