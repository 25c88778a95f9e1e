"""Typed config of the edit job (`configs/edit/*.yaml`); presets and overrides are merged by `dva.runtime.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dva.config import nested_key
from dva.diffusion.inversion import InversionConfig
from dva.editing.clip_direction import ClipEditConfig
from dva.errors import ConfigError
from dva.face.config import FaceConfig
from dva.models.config import ModelConfig
from dva.models.fused_norm import NORM_KERNELS
from dva.precision import check_precision
from dva.runtime.config import StageConfig, TaskConfig, check_crops_fit_model, check_trained_weights

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class WriterTaskConfig(TaskConfig):
    """Stage C: one Ray task per (video, edit)."""

    retries: int = 3  # a stage C task lost with its worker is run again (its output is committed atomically)


@dataclass
class GenerateStageConfig(StageConfig):
    """Stage B. Sizing rule (measured by benchmarks/gpu_suite.py): `batch_frames` = the smallest batch on the
    throughput plateau (dva256 on an H200: 32 ≈ 64), capped by 0.8 × GPU memory ÷ the suite's peak MiB per frame;
    one actor per GPU (`num_gpus: 1`)."""

    batch_frames: int = 16  # frames per UNet batch, gathered from chunks of any videos
    # torch.compile the UNet once per actor (static shapes: every batch is padded to batch_frames). dva256 on an
    # H200: 290 vs 80 TFLOP/s eager, after ≈80 s of compilation; worth it on GPU, not for short CPU runs.
    compile: bool = False
    compile_mode: str = "default"  # torch.compile's `mode` (see COMPILE_MODES)
    compile_fullgraph: bool = True  # a graph break fails the compile instead of running part of the UNet eagerly
    coordinate_descent_tuning: bool = False  # Inductor's extra search over each generated kernel's launch config
    # A local folder (e.g. on a node's disk shared by its actors) for Inductor's FX-graph, AOT-autograd and kernel
    # caches: the stage-B actors of a job, pass 2 of a clip job and later jobs load the compiled UNet from it instead
    # of compiling again. null: torch's default (/tmp/torchinductor_<user>).
    compile_cache_dir: Optional[str] = None
    # cuDNN times its convolution algorithms once per shape and keeps the fastest (batches have one shape). The
    # pick can differ between processes, and with it the rounding: false keeps GPU pixels identical run to run.
    cudnn_benchmark: bool = True
    # GroupNorm chains (norm → modulation → SiLU): `eager` (PyTorch ops, the reference) or `triton` (fused kernels,
    # dva.models.fused_norm; CUDA only).
    norm_kernels: str = "eager"
    # Writes of x_T and edited crops waiting in the stage's background writer (dva.runtime.background) while the UNet
    # goes on; each holds one chunk (x_T: chunk_frames × 3 × S² float32). 0: write in the UNet's thread.
    write_queue: int = 8

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.write_queue < 0:
            raise ConfigError(f"config key `{nested_key(key, 'write_queue')}`: {self.write_queue} pending writes; "
                              f"use 0 (write in the UNet's thread) or more")
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"config key `{nested_key(key, 'compile_mode')}`: {self.compile_mode!r} is not one of "
                              f"{COMPILE_MODES}")
        if self.compile_cache_dir is not None and "://" in self.compile_cache_dir:
            raise ConfigError(f"config key `{nested_key(key, 'compile_cache_dir')}`: {self.compile_cache_dir!r} is "
                              f"not a local folder (Inductor's caches are files on the node)")
        if self.norm_kernels not in NORM_KERNELS:
            raise ConfigError(f"config key `{nested_key(key, 'norm_kernels')}`: {self.norm_kernels!r} is not one of "
                              f"{NORM_KERNELS}")


@dataclass
class EditJobConfig:
    input: str = ""  # a prefix (local dir or s3://...) holding videos, or a manifest .csv/.parquet/.jsonl
    output: str = ""  # a prefix (local dir or s3://...)
    # Edit specs (see dva.editing.edits); an empty list only encodes: latents are the output.
    edits: list[str] = field(default_factory=lambda: ["reconstruct"])
    # An edit `…@match:URI` changes the face tracks whose mean identity code z̄_id has at least this cosine with the
    # reference's (dva.editing.faces). Higher: fewer look-alikes edited, but a person filmed at a hard angle or in
    # poor light may be missed.
    faces_match_min_cosine: float = 0.5
    classifier: Optional[str] = None  # attribute classifier file for `classifier:NAME:SCALE` edits
    # `clip:"SOURCE":"TARGET":SCALE` edits: a preset of configs/edit_methods/ or a YAML path, merged under
    # `clip_edit` (override single keys as clip_edit.clip.weights=..., clip_edit.iterations=...). Directions are
    # cached under `clip_edit.output_prefix`, by default <output>/.directions.
    clip_edit_preset: str = "clip"
    clip_edit: ClipEditConfig = field(default_factory=ClipEditConfig)
    steps: int = 100  # DDIM steps N: inversion costs N-1 UNet calls per frame, each edit N more
    # How x0 → x_T is solved (dva.diffusion.inversion): `ddim`, or `fixed_point` (N·iterations calls, exact at
    # convergence, so a smaller N reconstructs as well as a large one). Stored latents are keyed by it.
    inversion: InversionConfig = field(default_factory=InversionConfig)
    precision: str = "auto"  # a dva.precision value: auto = bf16 autocast on GPU, fp32 on CPU
    chunk_frames: int = 16  # frames that travel between stages together (one video's consecutive frames)
    store_latents: bool = True  # keep x_T, z and the face track under <output>/latents/ for later edits
    reuse_latents: bool = True  # a video whose latents exist for this model and N skips detection and inversion
    # Temporaries (`.partial/`) that killed writers left under `output` and that are older than this are deleted
    # when a job starts (null: never). Keep it well above the longest single write of a job sharing the output.
    sweep_partials_after_s: Optional[float] = 21600.0
    fail_fast: bool = False  # stop at the first failed video instead of recording it and going on
    ray_address: Optional[str] = None  # None: connect to a running cluster if RAY_ADDRESS is set, else start one
    progress: bool = True
    model_preset: str = "dva256"
    face_preset: str = "dlib"
    model: ModelConfig = field(default_factory=ModelConfig)
    # Run without `model.checkpoint`, on a UNet with random weights: for tests, rehearsals and benchmarks only. Its
    # zero-initialised output layer returns every input unchanged, so the outputs are not edits; the console, the
    # manifest (`random_weights` column) and the report say so. Without it, a job with no checkpoint does not start.
    random_weights: bool = False
    face: FaceConfig = field(default_factory=FaceConfig)
    frontend: StageConfig = field(default_factory=StageConfig)
    generate: GenerateStageConfig = field(default_factory=GenerateStageConfig)
    writer: WriterTaskConfig = field(default_factory=WriterTaskConfig)
    # The Ray task that optimises a video's clip directions beside the pipeline (jobs that keep latents). Its own
    # block: a GPU given here (on a GPU cluster, e.g. num_gpus: 0.5 to share one) is not also given to every
    # stage-A actor. Without latents kept the optimisation runs inside stage A, on the `frontend` resources.
    clip_task: TaskConfig = field(default_factory=TaskConfig)

    def validate(self, key: str) -> None:
        if not self.input:
            raise ConfigError("config key `input`: set it to a folder/prefix of videos or a manifest file")
        if not self.output:
            raise ConfigError("config key `output`: set it to a folder or s3:// prefix for the results")
        check_precision(self.precision, "precision")
        if self.sweep_partials_after_s is not None and self.sweep_partials_after_s < 0:
            raise ConfigError("config key `sweep_partials_after_s`: an age in seconds (≥ 0), or null for never")
        if not -1.0 <= self.faces_match_min_cosine <= 1.0:
            raise ConfigError(f"config key `faces_match_min_cosine`: {self.faces_match_min_cosine} is not a cosine "
                              "(between -1 and 1)")
        if self.steps < 2:
            raise ConfigError(f"config key `steps`: {self.steps} is too few (at least 2 DDIM steps)")
        if self.chunk_frames < 1 or self.generate.batch_frames < 1:
            raise ConfigError("config keys `chunk_frames` and `generate.batch_frames` must be at least 1")
        check_crops_fit_model(self.face, self.model)
        check_trained_weights(self.model, self.random_weights)
        if not self.edits and not self.store_latents:
            raise ConfigError("config key `edits`: with no edits (encode only) `store_latents` must be true")
        self.face.check_device(self.frontend.num_gpus)
