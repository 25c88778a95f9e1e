"""The FAN (2DFAN-4) landmark encoder: face-alignment's decode, batched; where the points land in the crop; the
file format face-alignment ships; and the paper's model preset building on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from face_alignment.utils import get_preds_fromhm

from dva.errors import MissingWeightsError
from dva.models.config import EncoderConfig
from dva.models.encoders import build_encoder
from dva.models.fan_encoder import FanLandmarkEncoder, fan_square, heatmap_points
from dva.models.reference.landmarks import JAW_POINTS, NUM_POINTS
from dva.standins import write_fan
from standin_weights import write_tiny_arcface_onnx


@pytest.fixture(scope="module")
def fan_file(tmp_path_factory):
    return write_fan(tmp_path_factory.mktemp("fan") / "2DFAN4-11f355bf06.pth.tar")


def _cfg(weights) -> EncoderConfig:
    return EncoderConfig(kind="fan_landmarks", dim=102, weights=str(weights) if weights else None)


def test_batched_decode_equals_face_alignments_own():
    gen = torch.Generator().manual_seed(0)
    heatmaps = torch.rand(3, NUM_POINTS, 64, 64, generator=gen)
    # Peaks on the border rows/columns, where face-alignment skips the sub-pixel step.
    heatmaps[0, 0, 0, 10] = heatmaps[0, 1, 63, 63] = heatmaps[1, 2, 20, 0] = heatmaps[2, 3, 5, 63] = 2.0
    expected, _, _ = get_preds_fromhm(heatmaps.numpy())
    got = heatmap_points(heatmaps)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    assert {0.25, 0.75} <= set(np.round(got.numpy() % 1, 2).ravel().tolist())  # the quarter steps happen
    assert 0.5 in set(np.round(got.numpy() % 1, 2).ravel().tolist())  # and are skipped on the border


class _BrightSpot(torch.nn.Module):
    """A network that does what FAN is trained to: a heatmap peaking where the point is. Every channel's heatmap is
    the 4×4-pooled brightness of FAN's input, so each point must come out at the image's one bright spot."""

    def forward(self, square):
        heat = F.avg_pool2d(square.mean(1, keepdim=True), 4)
        return [heat.expand(-1, NUM_POINTS, -1, -1)]


@pytest.mark.parametrize("size", [256, 128])
def test_points_are_fractions_of_the_crop(size):
    encoder = FanLandmarkEncoder()
    encoder.fan = _BrightSpot()
    spots = [(0.3, 0.6), (0.71, 0.42)]
    images = -torch.ones(len(spots), 3, size, size)
    for image, (x, y) in zip(images, spots):
        image[:, int(y * size) - 1 : int(y * size) + 2, int(x * size) - 1 : int(x * size) + 2] = 1
    points = encoder.points(images)
    assert points.shape == (2, NUM_POINTS, 2)
    cell = fan_square()[2] / 64  # one heatmap cell, as a fraction of the crop
    for found, (x, y) in zip(points, spots):
        assert torch.allclose(found, torch.tensor([x, y]).expand_as(found), atol=cell)


def test_encoder_loads_the_released_format_and_lays_out_z_lnd(fan_file):
    encoder = build_encoder(_cfg(fan_file), "landmark_encoder", "landmark")
    stored = torch.load(fan_file, weights_only=True)
    name, value = next(iter(stored.items()))
    torch.testing.assert_close(encoder.fan.state_dict()[name], value.float())
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = encoder(images)
    assert z.shape == (1, 102) and z.dtype == torch.float32
    assert z.min() >= 0 and z.max() <= 1
    # x17, y17, x18, y18, ...: the clamped points without the jaw, as every z_lnd backend lays them out.
    points = encoder.points(images).clamp(0, 1)
    torch.testing.assert_close(z, points[:, JAW_POINTS:].reshape(1, -1))
    torch.testing.assert_close(z[:, 1], points[:, JAW_POINTS, 1])
    encoder.train()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


def test_missing_or_unreadable_files_name_the_config_key(tmp_path):
    for weights, detail in [(None, "no file configured"), (tmp_path / "absent.pth.tar", "does not exist")]:
        with pytest.raises(MissingWeightsError, match=detail) as err:
            build_encoder(_cfg(weights), "landmark_encoder", "landmark")
        assert err.value.config_key == "landmark_encoder.weights" and "2DFAN4" in str(err.value)
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(MissingWeightsError, match="cannot be read"):
        build_encoder(_cfg(garbage), "landmark_encoder", "landmark")
    from face_alignment.models import FAN

    one_hourglass = tmp_path / "2DFAN1.pth.tar"
    torch.save(FAN(1).state_dict(), one_hourglass)
    with pytest.raises(MissingWeightsError, match="missing .* keys"):
        build_encoder(_cfg(one_hourglass), "landmark_encoder", "landmark")


def test_dva256_builds_with_stand_in_files(tmp_path, fan_file):
    """The paper's model preset, as every job loads it, encodes a batch with its configured encoders."""
    from dva.config import load_config
    from dva.runtime.weights import load_model
    from dva.models.config import ModelConfig

    write_tiny_arcface_onnx(tmp_path / "w600k_r50.onnx")
    cfg = load_config(ModelConfig, "dva256", [f"identity_encoder.weights={tmp_path}/w600k_r50.onnx",
                                              f"landmark_encoder.weights={fan_file}"], group="model")
    model = load_model(cfg, with_unet=False)
    assert isinstance(model.landmark_encoder, FanLandmarkEncoder) and model.unet is None
    crops = torch.rand(1, 3, 256, 256) * 2 - 1
    z_face = model.face_code(model.encode_identity(crops), model.encode_landmarks(crops))
    assert z_face.shape == (1, 512)
