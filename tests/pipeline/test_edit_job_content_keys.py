"""Outputs and stored latents follow content: an input or a checkpoint replaced at the same location is edited
again from scratch, never served from what the old one left; an edit's file replaced in place, or a stage C
setting changed, makes that edit's outputs again from the stored latents."""

from __future__ import annotations

import shutil

import pytest
import torch

from edit_job_args import job_overrides
from dva.editing import identity_encoder_id
from dva.editing.classifier import AttributeClassifier
from dva.editing.direction import EditDirection
from dva.runtime.manifest import read_manifest
from dva.runtime.weights import load_model, save_checkpoint
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import run_edit_job
from dva.samples import make_sample_clip


def run(input_, output, ckpt, *extra):
    cfg = load_job_config(EditJobConfig, "local_tiny", job_overrides(str(input_), str(output), str(ckpt), *extra))
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


def write_edit_files(cfg, classifier, direction, seed: int) -> None:
    """A classifier and a direction file for `cfg`'s model, with weights drawn from `seed`."""
    encoder_id, dim = identity_encoder_id(load_model(cfg.model)), cfg.model.identity_encoder.dim
    generator = torch.Generator().manual_seed(seed)
    AttributeClassifier(weight=torch.randn(1, dim, generator=generator), bias=torch.zeros(1), names=("Smiling",),
                        mu=torch.zeros(dim), sigma=torch.full((dim,), 0.05), encoder_id=encoder_id).save(classifier)
    EditDirection(torch.randn(dim, generator=generator), encoder_id).save(direction)


def made_from(out) -> dict[str, str]:
    return {row["edit"]: row["fingerprint"] for row in read_manifest(str(out)).to_pylist()}


@pytest.mark.slow
def test_an_edit_file_replaced_in_place_or_a_paste_setting_redoes_only_those_pairs(ray_local, tiny_checkpoint,
                                                                                   tmp_path):
    clips, out = tmp_path / "in", tmp_path / "out"
    make_sample_clip(clips / "v.mp4", "astronaut", frames=4)
    classifier, direction = tmp_path / "smiling.safetensors", tmp_path / "beard.safetensors"
    smiling, beard = "classifier:Smiling:1.5", f"direction:{direction}:0.5"
    edits = (f"edits=[{smiling},{beard}]", f"classifier={classifier}")
    cfg = load_job_config(EditJobConfig, "local_tiny", job_overrides(str(clips), str(out), tiny_checkpoint))
    write_edit_files(cfg, classifier, direction, seed=1)
    _, first = run(clips, out, tiny_checkpoint, *edits)
    assert (first.ok, first.failed) == (2, 0)
    _, same = run(clips, out, tiny_checkpoint, *edits)
    assert (same.ok, same.skipped) == (0, 2)  # nothing changed: nothing to do
    decoded = cfg.steps * 4  # UNet calls of one edit of the video from its stored x_T

    before = made_from(out)
    write_edit_files(cfg, classifier, tmp_path / "unused.safetensors", seed=2)  # another classifier, same path
    _, new_classifier = run(clips, out, tiny_checkpoint, *edits)
    assert (new_classifier.ok, new_classifier.skipped, new_classifier.unet_calls) == (1, 1, decoded)
    after = made_from(out)
    assert after[smiling] != before[smiling] and after[beard] == before[beard]

    write_edit_files(cfg, tmp_path / "unused.safetensors", direction, seed=3)  # another direction, same path
    _, new_direction = run(clips, out, tiny_checkpoint, *edits)
    assert (new_direction.ok, new_direction.skipped, new_direction.unet_calls) == (1, 1, decoded)
    assert made_from(out)[smiling] == after[smiling] and made_from(out)[beard] != after[beard]

    _, square = run(clips, out, tiny_checkpoint, *edits, "face.mask.paste_mode=square")
    assert (square.ok, square.skipped, square.unet_calls) == (2, 0, 2 * decoded)
    _, square_again = run(clips, out, tiny_checkpoint, *edits, "face.mask.paste_mode=square")
    assert (square_again.ok, square_again.skipped) == (0, 2)
