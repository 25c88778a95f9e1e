"""Job configuration shared by every job: presets merged under a job YAML, `key=value` overrides, the Ray
resources of tasks and stages.

A job YAML names presets (`model_preset: tiny`, `face_preset: dlib`, for the edit job also `clip_edit_preset: clip`);
their YAML is merged under `model` / `face` / `clip_edit` first, then the job YAML, then the overrides, and the
whole is validated before Ray starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from dva.config import load_yaml, merge_config, nested_key
from dva.errors import ConfigError
from dva.face.config import FaceConfig
from dva.models.config import ModelConfig


@dataclass
class TaskConfig:
    """What one Ray task (or each actor of a stage) asks for: CPUs, GPUs and custom resources.

    `resources` are Ray custom resources held besides CPUs and GPUs, e.g. `{accel: 1}`: only nodes that declare
    them run the task, so an autoscaler starts nodes of a type that has them.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0  # a fraction shares a GPU; above 1, whole GPUs only
    resources: dict[str, float] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        for name, amount in (("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus)):
            if not (math.isfinite(amount) and amount >= 0):
                raise ConfigError(f"config key `{nested_key(key, name)}`: {amount} must be a finite number ≥ 0")
        if self.num_gpus > 1 and not float(self.num_gpus).is_integer():
            raise ConfigError(f"config key `{nested_key(key, 'num_gpus')}`: {self.num_gpus}: Ray takes a fraction of "
                              "one GPU or whole GPUs")
        for name, amount in self.resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory") or not amount > 0:
                raise ConfigError(
                    f"config key `{nested_key(key, f'resources.{name}')}`: a custom resource name with a positive "
                    f"amount; set CPUs and GPUs with `{nested_key(key, 'num_cpus')}` / "
                    f"`{nested_key(key, 'num_gpus')}`")

    def ray_options(self) -> dict:
        """The resource request as Ray's `ray.remote` / `map_batches` keyword arguments."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.resources)}


@dataclass
class StageConfig(TaskConfig):
    """A Ray Data stage run by a pool of `actors` actors (autoscaling from `min_actors` when set), each asking for
    the resources of a `TaskConfig`."""

    actors: int = 1
    min_actors: Optional[int] = None

    def validate(self, key: str) -> None:
        if self.actors < 1 or (self.min_actors is not None and not 1 <= self.min_actors <= self.actors):
            raise ConfigError(f"config key `{nested_key(key, 'actors')}`: need 1 <= min_actors <= actors")
        super().validate(key)


def check_crops_fit_model(face: FaceConfig, model: ModelConfig) -> None:
    """The front end's aligned crops are the model's input: `face.align.crop_size` must be `model.unet.image_size`."""
    if face.align.crop_size != model.unet.image_size:
        raise ConfigError(
            f"config key `face.align.crop_size`: {face.align.crop_size} must equal the model's "
            f"`model.unet.image_size` ({model.unet.image_size}): the aligned crops are the model's input")


# What a job with `random_weights: true` says on its console when it starts, and `dva check` as a warning.
RANDOM_WEIGHTS_WARNING = ("random_weights=true: the UNet has random weights (no `model.checkpoint`); its "
                          "zero-initialised output layer returns every input unchanged, so the outputs are not edits "
                          "(for tests, rehearsals and benchmarks)")


def check_trained_weights(model: ModelConfig, random_weights: bool) -> None:
    """A job that decodes with the UNet runs with trained weights (`model.checkpoint`), or with random ones only when
    its config says `random_weights: true`; never both, never neither. A random-initialised UNet predicts ε ≡ 0, so
    inversion and decoding return the input: a job without weights would report every edit done and change nothing."""
    if random_weights and model.checkpoint:
        raise ConfigError("config key `random_weights`: true, but `model.checkpoint` is set; drop one of them")
    if not random_weights and not model.checkpoint:
        raise ConfigError("config key `model.checkpoint`: not set, and a UNet with random weights returns every "
                          "input unchanged; set it to a trained dva checkpoint (a path or s3:// URI), or pass "
                          "random_weights=true for a test, rehearsal or benchmark")


def preset_name(sources: Sequence, overrides: Sequence[str], key: str, default: str) -> str:
    value = default
    for src in sources:
        value = OmegaConf.select(src, key, default=value)
    for o in overrides:
        if o.startswith(f"{key}="):
            value = o.split("=", 1)[1]
    return value


def load_job_config(schema: type, name_or_path: str | Path, overrides: Sequence[str] = (), group: str = "edit"):
    """Load a job preset/YAML, merging its model and face presets underneath it, then the overrides."""
    job_yaml = load_yaml(name_or_path, group)
    model_preset = preset_name([job_yaml], overrides, "model_preset", schema.model_preset)
    face_preset = preset_name([job_yaml], overrides, "face_preset", schema.face_preset)
    base = OmegaConf.create({"model": load_yaml(model_preset, "model"), "face": load_yaml(face_preset, "face")})
    if hasattr(schema, "clip_edit_preset"):
        clip_preset = preset_name([job_yaml], overrides, "clip_edit_preset", schema.clip_edit_preset)
        base.clip_edit = load_yaml(clip_preset, "edit_methods")
    return merge_config(schema, [base, job_yaml], overrides)
