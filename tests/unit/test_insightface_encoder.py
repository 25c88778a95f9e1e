"""The insightface ArcFace identity encoder, on tiny ONNX files with ArcFace's shapes loaded by insightface itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from insightface.model_zoo.arcface_onnx import ArcFaceONNX

from dva.errors import MissingWeightsError
from dva.models.config import EncoderConfig
from dva.models.encoders import build_encoder
from dva.models.insightface_encoder import InsightFaceIdentityEncoder, arcface_region
from standin_weights import ARCFACE_POOL, write_tiny_arcface_onnx


def _expected(images: torch.Tensor, weight: np.ndarray) -> torch.Tensor:
    """What the tiny model must give when fed the ArcFace region with values in [-1, 1]."""
    pooled = F.avg_pool2d(arcface_region(images, 112), ARCFACE_POOL).flatten(1)
    return F.normalize(pooled @ torch.from_numpy(weight).T, dim=1)


def _build(path: Path) -> InsightFaceIdentityEncoder:
    cfg = EncoderConfig(kind="insightface_arcface", dim=512, weights=str(path))
    return build_encoder(cfg, "model.identity_encoder", "identity")


def test_loads_through_insightface_and_feeds_the_model_values_in_minus1_1(tmp_path):
    path = tmp_path / "w600k_tiny.onnx"
    weight = write_tiny_arcface_onnx(path, batch="N")
    encoder = _build(path)
    assert isinstance(encoder.model, ArcFaceONNX)
    assert encoder.model.input_mean == 127.5 and encoder.model.input_std == 127.5
    images = torch.rand(3, 3, 256, 256) * 2 - 1
    z = encoder(images)
    assert z.shape == (3, 512) and z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(z, _expected(images, weight), atol=1e-4)


def test_fixed_batch_model_runs_one_image_at_a_time(tmp_path):
    path = tmp_path / "fixed.onnx"
    weight = write_tiny_arcface_onnx(path, batch=1)
    images = torch.rand(2, 3, 128, 128) * 2 - 1  # not 256: resized to the 256 crop frame first
    assert torch.allclose(_build(path)(images), _expected(images, weight), atol=1e-4)


def test_missing_or_wrong_files_raise_missing_weights(tmp_path):
    absent = tmp_path / "w600k_r50.onnx"
    with pytest.raises(MissingWeightsError) as err:
        _build(absent)
    assert str(absent) in str(err.value) and "model.identity_encoder.weights" in str(err.value)

    not_onnx = tmp_path / "model.bin"
    not_onnx.write_bytes(b"\0" * 16)
    with pytest.raises(MissingWeightsError, match=r"not an \.onnx file"):
        _build(not_onnx)

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(MissingWeightsError, match="cannot be loaded"):
        _build(corrupt)

    attribute_model = tmp_path / "genderage.onnx"  # 96×96 input: insightface routes it as an attribute model
    write_tiny_arcface_onnx(attribute_model, batch="N", size=96)
    with pytest.raises(MissingWeightsError, match="not recognition"):
        _build(attribute_model)
