"""Frozen encoders behind one small protocol, and the registry that builds them from config.

An encoder maps an image batch in [-1, 1] at the crop size, shape [B, 3, H, W], to a tensor [B, dim]. The identity
encoder gives z_id, the landmark encoder z_lnd. Implementations live in their own modules and are imported only
when their `kind` is configured, so a missing optional package or weight file only matters when it is used.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from dva.errors import ConfigError
from dva.models.config import EncoderConfig


@runtime_checkable
class ImageEncoder(Protocol):
    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class RandomConvEncoder(nn.Module):
    """A frozen, seeded random conv net. It stands in for real encoders in tiny CPU configs and tests.

    Deterministic given (dim, seed), so two processes build the same encoder without sharing weights.
    """

    def __init__(self, dim: int, seed: int = 0, normalize: bool = False):
        super().__init__()
        self.dim = dim
        self.normalize = normalize
        gen = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=4), nn.SiLU(), nn.Conv2d(16, 32, 2, stride=2), nn.SiLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, dim),
        )
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # frozen: always eval
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net(images.float())
        return nn.functional.normalize(out, dim=1) if self.normalize else torch.sigmoid(out)


# kind -> "module:callable(cfg: EncoderConfig, config_key: str, role: str) -> ImageEncoder"
_REGISTRY: dict[str, str] = {
    "random": "dva.models.encoders:_build_random",
    "reference_arcface": "dva.models.reference.arcface:build_identity_encoder",
    "reference_landmarks": "dva.models.reference.landmarks:build_landmark_encoder",
    "insightface_arcface": "dva.models.insightface_encoder:build_identity_encoder",
    "dlib_identity": "dva.models.dlib_encoders:build_identity_encoder",
    "dlib_landmarks": "dva.models.dlib_encoders:build_landmark_encoder",
    "fan_landmarks": "dva.models.fan_encoder:build_landmark_encoder",
}


def _build_random(cfg: EncoderConfig, config_key: str, role: str) -> ImageEncoder:
    return RandomConvEncoder(cfg.dim, seed=1 if role == "identity" else 2, normalize=role == "identity")


def build_encoder(cfg: EncoderConfig, config_key: str, role: str) -> ImageEncoder:
    """Build the encoder `cfg.kind` for `role` ("identity" or "landmark"); `config_key` names it in errors."""
    if cfg.kind not in _REGISTRY:
        raise ConfigError(f"config key `{config_key}.kind`: unknown encoder {cfg.kind!r}; known: {sorted(_REGISTRY)}")
    module, fn = _REGISTRY[cfg.kind].split(":")
    enc = getattr(importlib.import_module(module), fn)(cfg, config_key, role)
    if enc.dim != cfg.dim:
        raise ConfigError(f"config key `{config_key}.dim`: is {cfg.dim} but encoder {cfg.kind!r} outputs {enc.dim}")
    return enc
