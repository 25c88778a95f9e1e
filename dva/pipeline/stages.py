"""The edit job's stages as plain callables that Ray runs: load models once per actor, map a batch of rows.

Nothing here imports Ray: `edit_job` hands these classes to Ray Data (`map_batches`), which constructs each once
per actor (`__init__` loads weights) and calls it per batch, and runs `optimise_video_clip_edits` as a Ray task;
the same code runs in unit tests without Ray. Also the job's latent key (`model_fingerprint`, `latent_key`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterator

import numpy as np
import torch
from omegaconf import OmegaConf

from dva.config import to_yaml
from dva.face.landmarker import build_landmarker
from dva.runtime.weights import load_model
from dva.pipeline.config import EditJobConfig
from dva.editing.edits import parse_edit
from dva.pipeline.edit_resolution import EditResolver
from dva.pipeline.fast_unet import prepare_unet
from dva.pipeline.generate import generate_chunks
from dva.latents import LatentKey, LatentStore
from dva.frontend import VideoTask, failed_row, prepare_video
from dva.precision import autocast_dtype
from dva.runtime.background import BackgroundWriter
from dva.runtime.cluster import failure_reason, limit_threads, on_device, stage_device
from dva.storage import content_digest


def model_fingerprint(cfg: EditJobConfig) -> str:
    """Every setting x_T depends on besides N and the chunking, and the content of every weight file it reads.

    The model config and the bytes of its checkpoint and encoder weights; the face front end (its back end and that
    back end's settings and weights, tracking, alignment), which sets the crops; stage B's device kind and the
    precision it resolves to; `generate.compile` and `generate.batch_frames`, since kernels round by the device,
    shapes and graphs they run (measured on the CPU: inverting the same frames in batches of 3 and of 6 differs by
    6e-6), and stored latents must give the pixels a fresh run with the same settings gives. Mask and paste settings
    act after stage B: not in. Settings added later enter only when they leave their default, so latents stored
    before they existed stay valid: a non-DDIM inversion method with its settings, and the fused norm kernels and
    compile mode (other rounding).
    """
    face = cfg.face
    model_settings, face_settings = OmegaConf.structured(cfg.model), OmegaConf.structured(face)
    for settings, files in ((model_settings, cfg.model.weight_files()), (face_settings, face.weight_files())):
        for key in files:  # where a file lives does not matter, its bytes do (below)
            OmegaConf.update(settings, key, "<content>")
    weights = {**cfg.model.weight_files("model."), **face.weight_files("face.")}
    device = torch.device("cuda" if cfg.generate.num_gpus > 0 else "cpu")
    text = "\n".join([
        to_yaml(model_settings), face.backend, *(to_yaml(face_settings[k]) for k in (face.backend, "track", "align")),
        device.type, str(autocast_dtype(cfg.precision, device)), f"compile={cfg.generate.compile}",
        f"batch_frames={cfg.generate.batch_frames}",
        *(f"{key}={content_digest(uri)}" for key, uri in sorted(weights.items()))])
    if cfg.inversion.method != "ddim":
        text += "\n" + to_yaml(cfg.inversion)
    if cfg.generate.compile and cfg.generate.compile_mode != "default":
        text += f"\ncompile_mode={cfg.generate.compile_mode}"
    if cfg.generate.norm_kernels != "eager":
        text += f"\nnorm_kernels={cfg.generate.norm_kernels}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def latent_key(cfg: EditJobConfig) -> LatentKey:
    """Computed once per job pass on the driver (the weights are hashed there) and handed to the stages."""
    return LatentKey(model_fingerprint(cfg), cfg.steps, cfg.chunk_frames)


class PrepareStage:
    """Stage A: one video per call → a stream of chunk rows (or one failed row naming the error).

    With `clip_edits` (some video of the job has a clip edit) the actor keeps the whole model, UNet included, and
    resolves each such video's direction before its first chunk leaves (`dva.pipeline.edit_resolution`), on its
    own device (`frontend.num_gpus`): from the cache when `optimise_video_clip_edits` already ran (the job's second
    pass), else by optimising it here (jobs that keep no latents).
    """

    def __init__(self, cfg: EditJobConfig, key: LatentKey, clip_edits: bool = False):
        limit_threads(cfg.frontend.num_cpus)
        self.cfg = cfg
        self.device = stage_device(cfg.frontend.num_gpus)
        # Without clip edits stage A needs only the frozen encoders and the z_face linear.
        self.model = model = load_model(cfg.model, self.device, with_unet=clip_edits)
        self.landmarker = build_landmarker(cfg.face, "face.")
        self.resolver = EditResolver(model, cfg, self.landmarker)
        self.key = key

    def __call__(self, batch: dict) -> Iterator[dict]:
        limit_threads(self.cfg.frontend.num_cpus)
        for i in range(len(batch["uri"])):
            task = VideoTask(str(batch["uri"][i]), str(batch["key"][i]), str(batch["video_id"][i]),
                             list(batch["edits"][i]), str(batch["source"][i]))
            try:
                for row in prepare_video(task, self.cfg.face, self.landmarker,
                                         on_device(self.model.encode_identity, self.device),
                                         on_device(self.model.encode_landmarks, self.device), self.resolver,
                                         LatentStore(self.cfg.output, task.video_id), self.key,
                                         self.cfg.chunk_frames, self.cfg.reuse_latents):
                    yield {k: [v] for k, v in row.items()}
            except Exception as err:  # recorded for this video; the job goes on
                yield {k: [v] for k, v in failed_row(task, failure_reason(err)).items()}


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
        self.writer = BackgroundWriter(cfg.generate.write_queue)

    def __call__(self, batch: dict) -> dict:
        limit_threads(self.cfg.generate.num_cpus)
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["uri"]))]
        results = generate_chunks(self.model, rows, output=self.cfg.output, steps=self.cfg.steps,
                                  inversion=self.cfg.inversion, batch_frames=self.cfg.generate.batch_frames,
                                  store_latents=self.cfg.store_latents, device=self.device,
                                  autocast_dtype=self.dtype, writer=self.writer, memory_format=self.memory_format)
        return {k: np.array([r[k] for r in results]) for k in results[0]} if results else {}


_CLIP_RESOLVERS: dict[str, EditResolver] = {}


def optimise_video_clip_edits(cfg: EditJobConfig, task: VideoTask) -> dict[str, dict[int, dict]]:
    """The directions of a video's clip edits for each face they address, optimised (or read from the cache) on the
    face tracks that stage A stored; {edit: {face: {"uri", "cached"}}}. Runs as a Ray task beside the pipeline, so
    the optimisation overlaps stage B's inversion of the same video. The model (UNet included) and CLIP stay loaded
    in the worker process for the next video of the same job."""
    limit_threads(cfg.clip_task.num_cpus)
    key = to_yaml(cfg)  # the whole job: the resolver writes under its output and uses its clip_edit settings
    if key not in _CLIP_RESOLVERS:
        _CLIP_RESOLVERS.clear()
        model = load_model(cfg.model, stage_device(cfg.clip_task.num_gpus))
        _CLIP_RESOLVERS[key] = EditResolver(model, cfg, build_landmarker(cfg.face, "face."))
    resolver = _CLIP_RESOLVERS[key]
    store = LatentStore(cfg.output, task.video_id)
    tracks = store.load_tracks()
    addressed = resolver.faces(task, tracks, np.stack([store.load_codes(k)[0].mean(axis=0)
                                                       for k in range(len(tracks))]))
    results: dict[str, dict[int, dict]] = {}
    for edit in task.edits:
        results[edit] = {}
        for face in addressed[edit]:
            face_task = dataclasses.replace(task, edits=[edit], face=face)
            result = resolver.clip_direction(parse_edit(edit), face_task, tracks[face])
            results[edit][face] = {"uri": result.uri, "cached": result.from_cache}
    return results
