"""The noise estimator: size of the paper's model, shapes and conditioning of the tiny one."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from dva.config import load_config
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.config import ModelConfig
from dva.models.unet import UNet


def test_dva256_matches_paper_size_without_allocating():
    cfg = load_config(ModelConfig, "dva256", group="model")
    with torch.device("meta"):
        unet = UNet(cfg.unet)
        params = sum(p.numel() for p in unet.parameters())
        x, t, z = torch.empty(1, 3, 256, 256), torch.tensor([500]), torch.empty(1, 512)
        counter = FlopCounterMode(display=False)
        with counter:
            unet(x, t, z)
    assert abs(params - 190.6e6) / 190.6e6 < 0.005, params
    gflops = counter.get_total_flops() / 1e9
    assert abs(gflops - 771) / 771 < 0.02, gflops
    linear = (512 + 102) * 512 + 512
    assert linear == 314_880  # SPEC §1.2: +0.315 M for the z_face linear with the reference encoders


def test_tiny_model_shapes_and_dtypes(tiny_model):
    b, s = 3, tiny_model.image_size
    x = torch.randn(b, 3, s, s)
    z_id = tiny_model.encode_identity(x)
    z_lnd = tiny_model.encode_landmarks(x)
    assert z_id.shape == (b, tiny_model.cfg.identity_encoder.dim) and z_id.dtype == torch.float32
    assert z_lnd.shape == (b, tiny_model.cfg.landmark_encoder.dim)
    z_face = tiny_model.face_code(z_id, z_lnd)
    assert z_face.shape == (b, tiny_model.cfg.z_face_dim)
    eps = tiny_model(x, torch.tensor([0, 10, 999]), z_face)
    assert eps.shape == x.shape and eps.dtype == torch.float32
    # one z_id row per video broadcasts over its frames
    assert torch.equal(tiny_model.face_code(z_id[:1], z_lnd), tiny_model.face_code(z_id[:1].expand(b, -1), z_lnd))


def test_output_depends_on_z_face_and_time(random_tiny_unet):
    unet = random_tiny_unet
    x = torch.randn(2, 3, 32, 32)
    z = torch.randn(2, unet.cfg.embed_channels)
    t = torch.tensor([500, 500])
    with torch.no_grad():
        base = unet(x, t, z)
        other_z = unet(x, t, z.flip(0))
        other_t = unet(x, t + 1, z)
    assert (other_z - base).norm() / base.norm() > 0.05
    assert (other_t - base).norm() / base.norm() > 1e-3


def test_fresh_model_predicts_zero_noise(tiny_model):
    """Zero-initialised output convs (SPEC §1.2): an untrained UNet starts from ε = 0."""
    x = torch.randn(2, 3, 32, 32)
    eps = tiny_model(x, torch.tensor([3, 4]), torch.randn(2, tiny_model.cfg.z_face_dim))
    assert eps.abs().max() == 0


def test_config_dims_drive_the_z_face_linear():
    cfg = load_config(ModelConfig, "tiny", ["identity_encoder.dim=64", "landmark_encoder.dim=40"], group="model")
    model = DiffusionVideoAutoencoder(cfg)
    assert model.z_face.in_features == 104 and model.z_face.out_features == 128
