"""Job configuration shared by every job: presets merged under a job YAML, `key=value` overrides, stage resources.

A job YAML names presets (`model_preset: tiny`, `face_preset: dlib`, for the edit job also `clip_edit_preset: clip`);
their YAML is merged under `model` / `face` / `clip_edit` first, then the job YAML, then the overrides, and the
whole is validated before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from dva.config import merge_config, resolve_config_path
from dva.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class StageConfig:
    """Resources of one Ray stage. `actors` is the actor-pool size (autoscaling from `min_actors` when set).

    `resources` are Ray custom resources each actor (or task) holds besides CPUs and GPUs, e.g. `{accel: 1}`: only
    nodes that declare them run the stage, so an autoscaler starts nodes of a type that has them.
    """

    actors: int = 1
    min_actors: Optional[int] = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        if self.actors < 1 or (self.min_actors is not None and not 1 <= self.min_actors <= self.actors):
            raise ConfigError(f"config key `{key}.actors`: need 1 <= min_actors <= actors")
        for name, amount in self.resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory") or amount <= 0:
                raise ConfigError(
                    f"config key `{key}.resources.{name}`: a custom resource name with a positive amount; set CPUs "
                    f"and GPUs with `{key}.num_cpus` / `{key}.num_gpus`")

    def ray_options(self) -> dict:
        """The stage's resource request as Ray's `ray.remote` / `map_batches` keyword arguments."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.resources)}



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
    job_yaml = OmegaConf.load(resolve_config_path(name_or_path, group))
    model_preset = preset_name([job_yaml], overrides, "model_preset", schema.model_preset)
    face_preset = preset_name([job_yaml], overrides, "face_preset", schema.face_preset)
    base = OmegaConf.create({
        "model": OmegaConf.load(resolve_config_path(model_preset, "model")),
        "face": OmegaConf.load(resolve_config_path(face_preset, "face")),
    })
    if hasattr(schema, "clip_edit_preset"):
        clip_preset = preset_name([job_yaml], overrides, "clip_edit_preset", schema.clip_edit_preset)
        base.clip_edit = OmegaConf.load(resolve_config_path(clip_preset, "edit_methods"))
    return merge_config(schema, [base, job_yaml], overrides)
