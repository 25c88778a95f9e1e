"""Typed schema of a DVA model config (`configs/model/*.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dva.config import nested_key
from dva.errors import ConfigError


@dataclass
class EncoderConfig:
    """A frozen encoder: `kind` picks the implementation, `weights` is a local path or s3:// URI when it needs one
    (`dva.runtime.weights` resolves a URI to a local file before the encoder is built)."""

    kind: str = "random"
    dim: int = 512
    weights: Optional[str] = None
    sha256: Optional[str] = None


@dataclass
class UNetConfig:
    image_size: int = 256
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4, 4])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [16])
    num_heads: int = 1
    dropout: float = 0.1
    embed_channels: int = 512


@dataclass
class ModelConfig:
    name: str = "dva256"
    unet: UNetConfig = field(default_factory=UNetConfig)
    identity_encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="random", dim=512))
    landmark_encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="random", dim=102))
    face_parser: Optional[EncoderConfig] = None
    z_face_dim: int = 512
    # Trained DVA weights: a dva checkpoint (safetensors) or a reference Lightning .ckpt; None = random init.
    checkpoint: Optional[str] = None
    use_ema: bool = True

    def weight_files(self, prefix: str = "") -> dict[str, str]:
        """{config key: URI} of every weight file (or dlib model folder) this config names."""
        files = {f"{prefix}checkpoint": self.checkpoint}
        for role in ("identity_encoder", "landmark_encoder", "face_parser"):
            enc = getattr(self, role)
            files[f"{prefix}{role}.weights"] = enc.weights if enc is not None else None
        return {key: str(uri) for key, uri in files.items() if uri}

    def validate(self, key: str) -> None:
        u = self.unet
        if u.image_size % (2 ** (len(u.channel_mult) - 1)):
            raise ConfigError(
                f"config key `{nested_key(key, 'unet.image_size')}`: {u.image_size} is not divisible by "
                f"2^(levels-1) = {2 ** (len(u.channel_mult) - 1)} for channel_mult {u.channel_mult}"
            )
        if u.model_channels % 2:
            raise ConfigError(f"config key `{nested_key(key, 'unet.model_channels')}`: must be even (sinusoidal time "
                              "embedding)")
        if self.z_face_dim != u.embed_channels:
            raise ConfigError(f"config key `{nested_key(key, 'z_face_dim')}`: {self.z_face_dim} must equal "
                              f"`{nested_key(key, 'unet.embed_channels')}` ({u.embed_channels})")
        if not 0.0 <= u.dropout < 1.0:
            raise ConfigError(f"config key `{nested_key(key, 'unet.dropout')}`: {u.dropout} is not in [0, 1)")
