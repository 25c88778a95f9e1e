"""The single-process training step: it learns, EMA follows its recurrence, config errors are named."""

import pytest
import torch

from dva.config import load_config, merge_config
from dva.errors import ConfigError
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.config import ModelConfig
from dva.train.loop import OptimConfig, create_train_state, train_step

SMALL = ["unet.image_size=16", "unet.model_channels=32", "unet.channel_mult=[1,2]", "unet.attention_resolutions=[8]",
         "unet.embed_channels=64", "z_face_dim=64", "identity_encoder.dim=32"]


def small_model(seed=0):
    torch.manual_seed(seed)
    return DiffusionVideoAutoencoder(load_config(ModelConfig, "tiny", SMALL, group="model"))


def test_overfitting_eight_images_halves_the_loss():
    model = small_model()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(8, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    state = create_train_state(model, OptimConfig(lr=2e-3, ema_decay=0.99))
    losses = [train_step(state, {"images": images, "mask": mask}, g)["loss"] for _ in range(200)]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    assert state.step == 200


def test_ema_follows_its_recurrence():
    model = small_model()
    decay = 0.9
    state = create_train_state(model, OptimConfig(lr=1e-2, ema_decay=decay))
    name = "unet.input_blocks.0.0.weight"
    expected = model.trainable_state_dict()[name].clone()
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    for _ in range(3):
        train_step(state, {"images": images})
        expected = decay * expected + (1 - decay) * model.trainable_state_dict()[name]
    ema = state.ema.state_dict()[name]
    raw = model.trainable_state_dict()[name]
    assert torch.allclose(ema, expected, atol=1e-6)
    assert (ema - raw).abs().max() > 1e-4
    with state.ema.applied_to(model):
        assert torch.equal(model.trainable_state_dict()[name], ema)
    assert torch.equal(model.trainable_state_dict()[name], raw)
    # frozen encoders are not part of the trained or averaged state
    assert not any(k.startswith(("identity_encoder", "landmark_encoder")) for k in state.ema.state_dict())


def test_zero_decay_ema_equals_raw_weights():
    model = small_model()
    state = create_train_state(model, OptimConfig(ema_decay=0.0))
    train_step(state, {"images": torch.rand(2, 3, 16, 16) * 2 - 1})
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(state.ema.state_dict()[k], v)


def test_bad_optim_config_is_named():
    with pytest.raises(ConfigError, match="config key `amp`"):  # the block alone; in a train config `optim.amp`
        merge_config(OptimConfig, [{"amp": "fp8"}])


def test_model_without_unet_loads_the_same_encoders_and_z_face(tiny_model, tmp_path):
    from dva.runtime.weights import load_model, save_checkpoint

    with torch.no_grad():
        tiny_model.z_face.weight.add_(1.0)  # not the initialisation a fresh model would draw
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, tiny_model.trainable_state_dict())
    cfg = merge_config(ModelConfig, [tiny_model.cfg], [f"checkpoint={path}"])
    full, encoder_only = load_model(cfg), load_model(cfg, with_unet=False)
    assert encoder_only.unet is None and full.unet is not None
    assert torch.equal(encoder_only.z_face.weight, tiny_model.z_face.weight)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(encoder_only.encode_identity(x), full.encode_identity(x))
    assert sum(p.numel() for p in encoder_only.parameters()) < sum(p.numel() for p in full.parameters())
