"""Typed configs of the two training jobs: `dva preprocess` (`configs/preprocess/*.yaml`) and `dva train`
(`configs/train/*.yaml`).

Both name a model preset (`model_preset: tiny`) merged under `model`; preprocessing also names a face preset. The
whole is validated before Ray starts, so a typo fails at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from dva.config import load_yaml, merge_config
from dva.errors import ConfigError
from dva.face.config import FaceConfig
from dva.models.config import ModelConfig
from dva.runtime.config import StageConfig, check_crops_fit_model, load_job_config, preset_name
from dva.train.loop import OptimConfig


@dataclass
class PreprocessJobConfig:
    input: str = ""  # a prefix (local dir or s3://...) holding videos, or a manifest .csv/.parquet/.jsonl
    output: str = ""  # the dataset prefix: shards/, manifest/ and dataset.yaml go under it
    chunk_frames: int = 16  # frames encoded together and written as one Parquet row group
    fail_fast: bool = False
    ray_address: Optional[str] = None  # None: connect to a running cluster if RAY_ADDRESS is set, else start one
    progress: bool = True
    model_preset: str = "dva256"  # its frozen encoders (and face parser, when set) make z_id, z_lnd and the masks
    face_preset: str = "dlib"
    model: ModelConfig = field(default_factory=ModelConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    frontend: StageConfig = field(default_factory=StageConfig)

    def validate(self, key: str) -> None:
        if not self.input:
            raise ConfigError("config key `input`: set it to a folder/prefix of videos or a manifest file")
        if not self.output:
            raise ConfigError("config key `output`: set it to a folder or s3:// prefix for the training shards")
        if self.chunk_frames < 1:
            raise ConfigError("config key `chunk_frames` must be at least 1")
        check_crops_fit_model(self.face, self.model)  # crops are stored at the training size
        self.face.check_device(self.frontend.num_gpus)


@dataclass
class TrainDataConfig:
    """Where the shards are and how a step's batch is drawn from them (SPEC §2: k videos x m frames per worker).

    Each worker streams its share of the shards (file order reshuffled every epoch) into a buffer of whole videos
    and draws k distinct videos from the buffer, then m distinct frames of each; a video leaves the buffer after
    `uses_per_video` draws. `uses_per_video: 1` is the reference's epoch (every video once, m random frames);
    larger values read fewer bytes per step at the price of some correlation between nearby steps.
    """

    path: str = ""  # the preprocess output prefix (holding shards/ and dataset.yaml)
    videos_per_step: int = 4  # k, per worker
    frames_per_video: int = 4  # m
    buffer_videos: int = 32  # videos a worker holds to draw from (a shuffle window); PNG bytes, decoded on draw
    uses_per_video: int = 1
    flip: bool = True  # mirror each frame with probability 1/2 (crop, mask, and the z codes of the mirrored crop)
    read_batch_rows: int = 64  # rows per batch pulled from Ray Data


@dataclass
class ScalingSection:
    """Ray Train's ScalingConfig: one worker per GPU (or per CPU slot for `use_gpu: false`)."""

    num_workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    backend: str = "auto"  # torch.distributed backend: auto = nccl with GPUs, gloo without


@dataclass
class SampleGridConfig:
    """The PNG written with each checkpoint: inputs, DDIM reconstructions and identity swaps, with EMA weights."""

    frames: int = 4
    steps: int = 20  # DDIM steps N of the preview (inversion N-1 + 2 x generation N UNet calls per frame)


@dataclass
class TrainJobConfig:
    name: str = "dva"  # the run: <storage_path>/<name>; rerunning with the same name resumes it
    storage_path: str = ""  # local folder or s3:// prefix for checkpoints
    steps: int = 1_000_000  # total optimiser steps (a resumed run continues up to this count)
    checkpoint_every: int = 10_000
    report_every: int = 1  # steps per ray.train.report (metrics averaged over them)
    num_to_keep: Optional[int] = 5  # checkpoints kept (None: all)
    max_failures: int = 3  # worker-group restarts from the latest checkpoint before the run fails
    seed: int = 0
    ray_address: Optional[str] = None  # None: connect to a running cluster if RAY_ADDRESS is set, else start one
    progress: bool = True  # Ray Data progress bars
    model_preset: str = "dva256"
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    samples: SampleGridConfig = field(default_factory=SampleGridConfig)

    def validate(self, key: str) -> None:
        if not self.data.path:
            raise ConfigError("config key `data.path`: set it to the output prefix of `dva preprocess`")
        if not self.storage_path:
            raise ConfigError("config key `storage_path`: set it to a folder or s3:// prefix for checkpoints")
        if not self.name or "/" in self.name:
            raise ConfigError(f"config key `name`: {self.name!r} must be a non-empty name without '/'")
        d = self.data
        positive = {"steps": self.steps, "checkpoint_every": self.checkpoint_every, "report_every": self.report_every,
                    "data.videos_per_step": d.videos_per_step, "data.frames_per_video": d.frames_per_video,
                    "data.uses_per_video": d.uses_per_video, "data.read_batch_rows": d.read_batch_rows,
                    "scaling.num_workers": self.scaling.num_workers, "samples.frames": self.samples.frames}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"config key `{key}`: {value} must be at least 1")
        if self.data.buffer_videos < self.data.videos_per_step:
            raise ConfigError(f"config key `data.buffer_videos`: {self.data.buffer_videos} must be at least "
                              f"`data.videos_per_step` ({self.data.videos_per_step})")
        if self.samples.steps < 2:
            raise ConfigError("config key `samples.steps`: at least 2 DDIM steps")
        if self.scaling.backend not in ("auto", "nccl", "gloo"):
            raise ConfigError(f"config key `scaling.backend`: {self.scaling.backend!r} is not auto, nccl or gloo")
        if self.num_to_keep is not None and self.num_to_keep < 1:
            raise ConfigError("config key `num_to_keep`: at least 1, or null to keep every checkpoint")


def load_preprocess_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> PreprocessJobConfig:
    return load_job_config(PreprocessJobConfig, name_or_path, overrides, group="preprocess")


def load_train_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> TrainJobConfig:
    """A train preset/YAML with its model preset merged underneath, then the overrides (no face config: training
    reads crops, codes and masks from the shards)."""
    job_yaml = load_yaml(name_or_path, "train")
    model_preset = preset_name([job_yaml], overrides, "model_preset", TrainJobConfig.model_preset)
    base = OmegaConf.create({"model": load_yaml(model_preset, "model")})
    return merge_config(TrainJobConfig, [base, job_yaml], overrides)
