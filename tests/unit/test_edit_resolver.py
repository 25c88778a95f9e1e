"""Stage A's edit resolver: `identity:` references are encoded on the device the model sits on (a GPU when
`frontend.num_gpus` gives the stage one), not on the CPU where their crops are made."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dva.config import load_config
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.config import ModelConfig
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_resolution import EditResolver
from dva.samples import load_photo


@pytest.fixture
def meta_model(monkeypatch):
    """The tiny model on the meta device with encoders that record where their input lies.

    No GPU here, so "meta" stands in for one: a model whose parameters are not on the CPU. Meta tensors hold no
    values, so the recorders return zeros of the right width instead of running the encoders (a meta conv fed a CPU
    tensor even returns a CPU tensor instead of failing, so only the recorded device tells the cases apart)."""
    model = DiffusionVideoAutoencoder(load_config(ModelConfig, "tiny", group="model")).to("meta")
    model.seen = []
    for name, dim in (("encode_identity", model.cfg.identity_encoder.dim),
                      ("encode_landmarks", model.cfg.landmark_encoder.dim)):
        def record(images, name=name, dim=dim):
            model.seen.append((name, images.device.type))
            return torch.zeros(len(images), dim)

        monkeypatch.setattr(model, name, record)
    return model


def test_identity_references_are_encoded_on_the_models_device(meta_model, dlib_landmarker, sample_clip, tmp_path):
    cfg = load_job_config(EditJobConfig, "local_tiny", ["random_weights=true", f"input={tmp_path}",
                                                        f"output={tmp_path / 'out'}"])
    resolver = EditResolver(meta_model, cfg, dlib_landmarker)
    photo = tmp_path / "grace.png"
    cv2.imwrite(str(photo), cv2.cvtColor(load_photo("grace_hopper"), cv2.COLOR_RGB2BGR))

    z_photo = resolver.reference_identity(str(photo))
    z_video = resolver.reference_identity(sample_clip("grace_hopper", frames=3, seed=1))
    assert z_photo.shape == z_video.shape == (cfg.model.identity_encoder.dim,) and not np.any(z_photo)
    kinds = {name for name, _ in meta_model.seen}
    assert kinds == {"encode_identity", "encode_landmarks"}  # the photo's crop and the video's crops were encoded
    assert {device for _, device in meta_model.seen} == {"meta"}, meta_model.seen
