"""Stage B's failure containment without Ray: a batch that mixes videos and fails is retried per video."""

from __future__ import annotations

import json

import numpy as np
import torch

from dva.config import load_config
from dva.runtime.weights import load_model
from dva.models.config import ModelConfig
from dva.diffusion.inversion import InversionConfig
from dva.pipeline.generate import generate_chunks
from dva.runtime.background import BackgroundWriter

MARKER = 1e4  # z_lnd value that makes the stand-in model run out of memory


class RunsOutOfMemoryOnMarkedFrames:
    """The tiny model, except that a UNet batch holding a marked frame raises CUDA's out-of-memory error."""

    def __init__(self, model):
        self.model, self.face_code = model, model.face_code
        self.batches: list[int] = []

    def __call__(self, x, t, cond):
        self.batches.append(len(x))
        if (cond.abs() > MARKER / 10).any():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(x, t, cond)


def chunk_row(model, video: str, chunk: int, frames: int, marked: bool) -> dict:
    rng = np.random.default_rng(chunk + 10 * ord(video))
    z_lnd = rng.normal(size=(frames, model.cfg.landmark_encoder.dim)).astype(np.float32)
    if marked:
        z_lnd[:] = MARKER
    return {"uri": f"/in/{video}.mp4", "key": f"{video}.mp4", "video_id": video, "num_frames": 2 * frames,
            "num_chunks": 2, "face": 0, "pair_chunks": json.dumps({"reconstruct": 2}), "z_id": rng.normal(size=model.cfg.identity_encoder.dim).astype(np.float32),
            "edits": json.dumps(["reconstruct"]), "z_edits": np.zeros((1, model.cfg.identity_encoder.dim), np.float32),
            "has_x_T": False, "error": "", "chunk": chunk, "start": chunk * frames,
            "crops": rng.integers(0, 256, (frames, 32, 32, 3), dtype=np.uint8), "z_lnd": z_lnd}


def test_out_of_memory_in_a_mixed_batch_fails_only_the_video_that_fails_alone(tmp_path):
    model = load_model(load_config(ModelConfig, "tiny", group="model"))
    fake = RunsOutOfMemoryOnMarkedFrames(model)
    rows = [chunk_row(model, "a", 0, 2, False), chunk_row(model, "b", 0, 2, True),
            chunk_row(model, "a", 1, 2, False), chunk_row(model, "b", 1, 2, True)]
    results = generate_chunks(fake, rows, output=str(tmp_path), steps=3, batch_frames=4, store_latents=True,
                              inversion=InversionConfig(), device=torch.device("cpu"), autocast_dtype=None,
                              writer=BackgroundWriter(8))
    by_video = {v: [r for r in results if r["video_id"] == v] for v in "ab"}
    assert [(r["chunk"], r["edit"], r["error"]) for r in by_video["a"]] == [(0, "reconstruct", ""),
                                                                            (1, "reconstruct", "")]
    assert len(by_video["b"]) == 2 and all("out of memory" in r["error"] and "generate.batch_frames" in r["error"]
                                           for r in by_video["b"])
    assert sorted(p.name for p in (tmp_path / "latents" / "a").rglob("*.npy")) == ["000000.npy", "000001.npy"]
    assert not (tmp_path / "latents" / "b").exists()
