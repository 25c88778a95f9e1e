"""Thin Ray Data wrappers around the stage functions: load models once per actor, map a batch of rows.

The library never imports Ray; this module and `edit_job` do. Each callable class is constructed once per actor
(`__init__` loads weights) and called per batch, so the same functions run in unit tests without Ray.
"""

from __future__ import annotations

import hashlib
import traceback
from typing import Iterator

import numpy as np
import torch

from dva.config import to_yaml
from dva.diffusion import autocast_dtype
from dva.errors import DvaError
from dva.face.landmarker import build_landmarker
from dva.models.checkpoint import load_model
from dva.pipeline.config import EditJobConfig
from dva.editing.edits import parse_edit
from dva.pipeline.edits import EditResolver
from dva.pipeline.fast_unet import prepare_unet
from dva.pipeline.generate import generate_chunks
from dva.pipeline.latents import LatentKey, LatentStore
from dva.pipeline.prepare import VideoTask, failed_row, prepare_video
from dva.pipeline.runtime import limit_threads, stage_device


def model_fingerprint(cfg: EditJobConfig) -> str:
    """What stored latents depend on besides N: the model config (checkpoint URI included) and the face config."""
    text = to_yaml(cfg.model) + to_yaml(cfg.face.align) + to_yaml(cfg.face.track)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def latent_key(cfg: EditJobConfig) -> LatentKey:
    return LatentKey(model_fingerprint(cfg), cfg.steps, cfg.chunk_frames)


class PrepareStage:
    """Stage A: one video per call → a stream of chunk rows (or one failed row naming the error).

    With `clip_edits` (some video of the job has a clip edit) the actor keeps the whole model, UNet included, and
    resolves each such video's direction before its first chunk leaves (`dva.pipeline.edits`), on its own device
    (`frontend.num_gpus`): from the cache when `optimise_video_clip_edits` already ran (the job's second pass),
    else by optimising it here (jobs that keep no latents).
    """

    def __init__(self, cfg: EditJobConfig, clip_edits: bool = False):
        limit_threads(cfg.frontend.num_cpus)
        self.cfg = cfg
        self.device = stage_device(cfg.frontend.num_gpus)
        # Without clip edits stage A needs only the frozen encoders and the z_face linear.
        self.model = model = load_model(cfg.model, self.device, with_unet=clip_edits)
        self.landmarker = build_landmarker(cfg.face)
        self.resolver = EditResolver(model, cfg, self.landmarker)
        self.key = latent_key(cfg)

    def _encode(self, fn):
        return lambda images: fn(images.to(self.device))

    def __call__(self, batch: dict) -> Iterator[dict]:
        limit_threads(self.cfg.frontend.num_cpus)
        for i in range(len(batch["uri"])):
            task = VideoTask(str(batch["uri"][i]), str(batch["key"][i]), str(batch["video_id"][i]),
                             list(batch["edits"][i]))
            try:
                for row in prepare_video(task, self.cfg.face, self.landmarker,
                                         self._encode(self.model.encode_identity),
                                         self._encode(self.model.encode_landmarks), self.resolver,
                                         LatentStore(self.cfg.output, task.video_id), self.key,
                                         self.cfg.chunk_frames, self.cfg.reuse_latents):
                    yield {k: [v] for k, v in row.items()}
            except DvaError as err:
                yield {k: [v] for k, v in failed_row(task, str(err)).items()}
            except Exception as err:  # a bug or an unexpected input: record it with its place, keep the job going
                where = traceback.format_exc(limit=-2).strip().splitlines()[-3:]
                yield {k: [v] for k, v in failed_row(task, f"{type(err).__name__}: {err} ({' | '.join(where)})"
                                                     ).items()}


class GenerateStage:
    """Stage B: a batch of chunk rows from any videos → inversion + one generation per edit, on the GPU."""

    def __init__(self, cfg: EditJobConfig):
        limit_threads(cfg.generate.num_cpus)
        self.cfg = cfg
        self.device = stage_device(cfg.generate.num_gpus)
        self.model = load_model(cfg.model, self.device)
        # channels_last is the fast layout for convolutions on GPU tensor cores; CPU kernels prefer NCHW.
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.model.unet = prepare_unet(self.model.unet, cfg.generate, self.device)
        self.dtype = autocast_dtype(cfg.precision, self.device)

    def __call__(self, batch: dict) -> dict:
        limit_threads(self.cfg.generate.num_cpus)
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["uri"]))]
        results = generate_chunks(self.model, rows, output=self.cfg.output, steps=self.cfg.steps,
                                  batch_frames=self.cfg.generate.batch_frames,
                                  store_latents=self.cfg.store_latents, device=self.device,
                                  autocast_dtype=self.dtype, memory_format=self.memory_format)
        return {k: np.array([r[k] for r in results]) for k in results[0]} if results else {}


_CLIP_RESOLVERS: dict[str, EditResolver] = {}


def optimise_video_clip_edits(cfg: EditJobConfig, task: VideoTask) -> dict[str, dict]:
    """The directions of a video's clip edits, optimised (or read from the cache) on the face track that stage A
    stored for it; {edit: {"uri", "cached"}}. Runs as a Ray task beside the pipeline, so the optimisation overlaps
    stage B's inversion of the same video. The model (UNet included) and CLIP stay loaded in the worker process for
    the next video of the same job."""
    limit_threads(cfg.frontend.num_cpus)
    key = to_yaml(cfg)  # the whole job: the resolver writes under its output and uses its clip_edit settings
    if key not in _CLIP_RESOLVERS:
        _CLIP_RESOLVERS.clear()
        model = load_model(cfg.model, stage_device(cfg.frontend.num_gpus))
        _CLIP_RESOLVERS[key] = EditResolver(model, cfg, build_landmarker(cfg.face))
    resolver = _CLIP_RESOLVERS[key]
    track = LatentStore(cfg.output, task.video_id).load_track()
    results = {}
    for edit in task.edits:
        result = resolver.clip_direction(parse_edit(edit), task, track)
        results[edit] = {"uri": result.uri, "cached": result.from_cache}
    return results
