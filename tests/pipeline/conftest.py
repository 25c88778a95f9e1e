"""Fixtures for the Ray pipeline tests: one local Ray on loopback per module, sample clips, a tiny checkpoint."""

from __future__ import annotations

import os

import cv2
import pytest
import torch

from dva.config import load_config
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.runtime.weights import save_checkpoint
from dva.models.config import ModelConfig
from dva.samples import load_photo, make_sample_clip

# Ray on loopback (ENV-NOTES). Set before any test module imports ray, which reads it once: a driver connecting to a
# 127.0.0.1 address would otherwise be sent to this machine's outward address, where no test cluster listens.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """The tiny model with every UNet weight random (zero-initialised layers too) and a strong z_id part in the
    z_face linear (the random identity encoder's codes of two faces are close), so z_id visibly matters."""
    torch.manual_seed(0)
    model = DiffusionVideoAutoencoder(load_config(ModelConfig, "tiny", group="model"))
    with torch.no_grad():
        for p in model.unet.parameters():
            p.copy_(torch.randn_like(p) * 0.5 / max(1, p[0].numel()) ** 0.5)
        model.z_face.weight[:, : model.cfg.identity_encoder.dim].normal_(0, 5.0)
    return str(save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_random.safetensors", model))


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory) -> str:
    """Two people (one clip with audio), plus a broken file and a clip without a face."""
    folder = tmp_path_factory.mktemp("clips")
    make_sample_clip(folder / "astronaut.mp4", "astronaut", frames=8, audio=True)
    make_sample_clip(folder / "grace hopper.mp4", "grace_hopper", frames=6, seed=1)
    make_sample_clip(folder / "sub" / "astronaut two.mp4", "astronaut", frames=5, seed=2, motion=0.5)
    make_sample_clip(folder / "no_face.mp4", "astronaut", frames=5, face_range=(99, 100))
    (folder / "broken.mp4").write_bytes(b"this is not a video")
    (folder / "empty.mp4").write_bytes(b"")
    return str(folder)


@pytest.fixture(scope="session")
def grace_png(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ref") / "grace.png"
    cv2.imwrite(str(path), cv2.cvtColor(load_photo("grace_hopper"), cv2.COLOR_RGB2BGR))
    return str(path)
