"""The key of stored latents follows the content of the weights and every setting x_T depends on."""

from __future__ import annotations

import os

import pytest

from dva.pipeline.config import EditJobConfig

from dva.runtime.config import load_job_config
from dva.pipeline.stages import model_fingerprint


def fingerprint(checkpoint, *overrides) -> str:
    return model_fingerprint(load_job_config(EditJobConfig, "local_tiny", [
        "input=unused", "output=unused", f"model.checkpoint={checkpoint}", *overrides]))


def test_a_checkpoint_replaced_at_the_same_path_changes_the_key(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"first weights")
    first = fingerprint(path)
    path.write_bytes(b"second weights, same path")
    assert fingerprint(path) != first
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes())
    assert fingerprint(copy) == fingerprint(path)  # the bytes count, not where they are (or when written)
    os.utime(copy, (1, 1))
    assert fingerprint(copy) == fingerprint(path)


@pytest.mark.parametrize("override", ["precision=bf16", "generate.compile=true", "generate.batch_frames=4",
                                      "face.dlib.upsample=1", "face.align.sigma_axes=2", "face.track.max_jump=0.4",
                                      "generate.num_gpus=1", "generate.norm_kernels=triton",
                                      "inversion.method=fixed_point"])
def test_settings_that_change_x_T_change_the_key(tmp_path, override):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    assert fingerprint(path, override) != fingerprint(path)


@pytest.mark.parametrize("override", ["face.mask.blur_px=2", "face.crop_crf=20", "writer.retries=1",
                                      "generate.actors=2"])
def test_settings_after_stage_b_keep_the_key(tmp_path, override):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    assert fingerprint(path, override) == fingerprint(path)
