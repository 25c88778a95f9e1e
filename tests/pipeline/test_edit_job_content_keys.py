"""Outputs and stored latents follow content: an input or a checkpoint replaced at the same location is edited
again from scratch, never served from what the old one left."""

from __future__ import annotations

import shutil

import pytest
import torch

from edit_job_args import job_overrides
from dva.runtime.weights import load_model, save_checkpoint
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import run_edit_job
from dva.samples import make_sample_clip


def run(input_, output, ckpt):
    cfg = load_job_config(EditJobConfig, "local_tiny", job_overrides(str(input_), str(output), str(ckpt)))
    return cfg, run_edit_job(cfg)


@pytest.mark.slow
def test_a_replaced_input_or_checkpoint_is_edited_again(ray_local, tiny_checkpoint, tmp_path):
    clips, out = tmp_path / "in", tmp_path / "out"
    make_sample_clip(clips / "v.mp4", "astronaut", frames=4)
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(tiny_checkpoint, ckpt)
    cfg, first = run(clips, out, ckpt)
    inverted = (2 * cfg.steps - 1) * 4  # UNet calls of a video whose x_T is computed, not loaded
    assert first.ok == 1 and first.unet_calls == inverted
    _, same = run(clips, out, ckpt)
    assert (same.ok, same.skipped) == (0, 1)  # nothing changed: nothing to do

    make_sample_clip(clips / "v.mp4", "grace_hopper", frames=4, seed=5)  # another video, same path
    _, replaced_input = run(clips, out, ckpt)
    assert (replaced_input.ok, replaced_input.skipped) == (1, 0) and replaced_input.unet_calls == inverted

    model = load_model(cfg.model)
    with torch.no_grad():
        model.z_face.weight.mul_(-1)
    save_checkpoint(ckpt, model)  # other weights, same path
    _, replaced_weights = run(clips, out, ckpt)
    assert (replaced_weights.ok, replaced_weights.skipped) == (1, 0) and replaced_weights.unet_calls == inverted
