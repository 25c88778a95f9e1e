"""Weight resolution (`dva.runtime.weights`): a model config's URIs become checked local files before a model is
built, errors name the configured URI and its config key; `dva.models` reads local files and state dicts only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fsspec
import pytest
import torch

from dva.config import load_config
from dva.errors import MissingWeightsError
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.checkpoint import build_model, checkpoint_state, write_checkpoint
from dva.models.config import EncoderConfig, ModelConfig
from dva.models.dlib_encoders import SHAPE_68_FILE
from dva.models.encoders import build_encoder
from dva.runtime.weights import (checkpoint_config, load_model, read_checkpoint, resolve_encoder, resolve_model_weights,
                                 save_checkpoint)
from dva.storage import CACHE_ENV, list_files
from standin_weights import write_tiny_arcface_onnx

SMALL = ["unet.image_size=16", "unet.model_channels=32", "unet.channel_mult=[1,2]", "unet.attention_resolutions=[8]",
         "unet.embed_channels=64", "z_face_dim=64", "identity_encoder.dim=32"]
ARCFACE = ["identity_encoder.kind=insightface_arcface", "identity_encoder.dim=512"]


def _cfg(*overrides: str) -> ModelConfig:
    return load_config(ModelConfig, "tiny", [*SMALL, *overrides], group="model")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _upload(local: Path, uri: str) -> str:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.put_file(str(local), path)
    return uri


def test_remote_checkpoint_and_encoder_weights_resolve_to_local_files(tmp_path, s3_bucket, cache):
    onnx = tmp_path / "w600k_r50.onnx"
    write_tiny_arcface_onnx(onnx)
    torch.manual_seed(0)
    model = DiffusionVideoAutoencoder(_cfg(*ARCFACE, f"identity_encoder.weights={onnx}"))
    checkpoint = f"{s3_bucket}/models/tiny.safetensors"
    assert save_checkpoint(checkpoint, model) == checkpoint
    assert list_files(f"{s3_bucket}/models") == [checkpoint]  # written at once: no temporary left beside it
    weights = _upload(onnx, f"{s3_bucket}/weights/w600k_r50.onnx")
    cfg = _cfg(*ARCFACE, f"identity_encoder.weights={weights}", f"checkpoint={checkpoint}")

    resolved = resolve_model_weights(cfg)
    for local in (resolved.checkpoint, resolved.identity_encoder.weights):
        assert "://" not in local and Path(local).is_file() and Path(local).is_relative_to(cache)
    assert (cfg.checkpoint, cfg.identity_encoder.weights) == (checkpoint, weights)  # the input config is unchanged

    loaded = load_model(cfg, with_unet=False)
    assert torch.equal(loaded.z_face.weight, model.z_face.weight)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded.encode_identity(images), model.encode_identity(images))
    state, meta = read_checkpoint(checkpoint)
    assert set(state) == set(model.trainable_state_dict()) and meta["weights"] == "ema"
    assert checkpoint_config(checkpoint).identity_encoder.kind == "insightface_arcface"


def test_missing_or_wrong_weights_are_rejected_with_their_config_key(tmp_path, s3_bucket):
    gone = f"{s3_bucket}/weights/gone.onnx"
    with pytest.raises(MissingWeightsError, match="does not exist") as err:
        resolve_model_weights(_cfg(*ARCFACE, f"identity_encoder.weights={gone}"))
    assert err.value.config_key == "identity_encoder.weights" and gone in str(err.value)

    with pytest.raises(MissingWeightsError, match="does not exist") as err:
        load_model(_cfg(f"checkpoint={s3_bucket}/models/gone.safetensors"), config_key="model.checkpoint")
    assert err.value.config_key == "model.checkpoint" and f"{s3_bucket}/models/gone.safetensors" in str(err.value)

    onnx = tmp_path / "w600k_r50.onnx"
    write_tiny_arcface_onnx(onnx)
    wrong_sum = "0" * 64
    with pytest.raises(MissingWeightsError, match="SHA-256 differs") as err:
        resolve_model_weights(_cfg(*ARCFACE, f"identity_encoder.weights={onnx}",
                                   f"identity_encoder.sha256={wrong_sum}"))
    assert err.value.config_key == "identity_encoder.weights"
    right_sum = hashlib.sha256(onnx.read_bytes()).hexdigest()
    resolved = resolve_model_weights(_cfg(*ARCFACE, f"identity_encoder.weights={onnx}",
                                          f"identity_encoder.sha256={right_sum}"))
    assert resolved.identity_encoder.weights == str(onnx)


def test_errors_name_the_configured_uri_not_the_cache_file(tmp_path, s3_bucket, cache):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    uri = _upload(bad, f"{s3_bucket}/models/bad.safetensors")
    for load in (lambda: load_model(_cfg(f"checkpoint={uri}")), lambda: read_checkpoint(uri)):
        with pytest.raises(MissingWeightsError, match="not a readable safetensors file") as err:
            load()
        assert err.value.path == uri and uri in str(err.value) and str(cache) not in str(err.value)
        assert err.value.config_key == "model.checkpoint"


def test_a_remote_dlib_folder_becomes_a_local_folder_of_its_files(tmp_path, s3_bucket):
    predictor = tmp_path / SHAPE_68_FILE
    predictor.write_bytes(b"68 points")
    _upload(predictor, f"{s3_bucket}/dlib/{SHAPE_68_FILE}")
    resolved = resolve_encoder(EncoderConfig(kind="dlib_landmarks", dim=102, weights=f"{s3_bucket}/dlib"),
                               "model.landmark_encoder")
    assert (Path(resolved.weights) / SHAPE_68_FILE).read_bytes() == b"68 points"


def test_models_read_local_files_and_state_dicts_only(tmp_path):
    remote = EncoderConfig(kind="insightface_arcface", dim=512, weights="s3://bucket/w600k_r50.onnx")
    with pytest.raises(MissingWeightsError, match="is a URI") as err:
        build_encoder(remote, "model.identity_encoder", "identity")
    assert err.value.config_key == "model.identity_encoder.weights"

    torch.manual_seed(0)
    model = DiffusionVideoAutoencoder(_cfg())
    path = tmp_path / "tiny.safetensors"
    write_checkpoint(path, model)
    state = checkpoint_state(path, use_ema=True, config_key="model.checkpoint")
    built = build_model(_cfg(f"checkpoint={path}"), state)
    assert all(torch.equal(built.state_dict()[k], v) for k, v in model.trainable_state_dict().items())
    with pytest.raises(MissingWeightsError, match="missing keys") as err:
        build_model(_cfg(f"checkpoint={path}"), {k: v for k, v in state.items() if not k.startswith("z_face.")})
    assert err.value.config_key == "model.checkpoint" and str(path) in str(err.value)
