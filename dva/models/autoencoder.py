"""The diffusion video autoencoder: frozen encoders → z_face = Linear([z_id, z_lnd]) → conditioned UNet.

Only `z_face` (the linear) and `unet` are trained; the identity and landmark encoders (and the face parser, when
configured) are frozen and come from their own weight files, so `trainable_state_dict` is what a dva checkpoint
stores; a converted reference checkpoint also holds the frozen networks (see `dva.models.reference.convert`).
"""

from __future__ import annotations

import torch
from torch import nn

from dva.errors import ConfigError
from dva.models.config import EncoderConfig, ModelConfig
from dva.models.encoders import ImageEncoder, build_encoder
from dva.models.unet import UNet

TRAINABLE_PREFIXES = ("z_face.", "unet.")


def build_face_parser(cfg: EncoderConfig | None, config_key: str = "face_parser") -> nn.Module | None:
    """The configured face parser (masks for the training loss and for pasting edits), or None without one."""
    if cfg is None:
        return None
    if cfg.kind != "reference_bisenet":
        raise ConfigError(
            f"config key `{config_key}.kind`: unknown face parser {cfg.kind!r}; known: ['reference_bisenet']")
    from dva.models.reference.bisenet import build_face_parser as build_bisenet

    return build_bisenet(cfg, config_key)


class DiffusionVideoAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig, identity_encoder: ImageEncoder | None = None,
                 landmark_encoder: ImageEncoder | None = None, face_parser: nn.Module | None = None,
                 with_unet: bool = True):
        super().__init__()
        self.cfg = cfg
        self.identity_encoder = identity_encoder or build_encoder(cfg.identity_encoder, "identity_encoder", "identity")
        self.landmark_encoder = landmark_encoder or build_encoder(cfg.landmark_encoder, "landmark_encoder", "landmark")
        self.z_face = nn.Linear(cfg.identity_encoder.dim + cfg.landmark_encoder.dim, cfg.z_face_dim)
        # Without the UNet (`unet` is None) the model only encodes: z_id, z_lnd, z_face, masks (the CPU front end).
        self.unet = UNet(cfg.unet) if with_unet else None
        self.face_parser = face_parser if face_parser is not None else build_face_parser(cfg.face_parser)

    @property
    def image_size(self) -> int:
        return self.cfg.unet.image_size

    @torch.no_grad()
    def encode_identity(self, images: torch.Tensor) -> torch.Tensor:
        """z_id per image, [B, id_dim], for crops in [−1, 1]."""
        return self.identity_encoder(images).float()

    @torch.no_grad()
    def encode_landmarks(self, images: torch.Tensor) -> torch.Tensor:
        """z_lnd per image, [B, lnd_dim], for crops in [−1, 1]."""
        return self.landmark_encoder(images).float()

    def face_code(self, z_id: torch.Tensor, z_lnd: torch.Tensor) -> torch.Tensor:
        """z_face = Linear([z_id, z_lnd]); z_id may be one row per video, broadcast over its frames."""
        if z_id.dim() == 1 or z_id.shape[0] == 1:
            z_id = z_id.reshape(1, -1).expand(z_lnd.shape[0], -1)
        return self.z_face(torch.cat([z_id.float(), z_lnd.float()], dim=1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z_face: torch.Tensor | None = None, *,
                z_features: torch.Tensor | None = None) -> torch.Tensor:
        """ε prediction; `model(x, t, z_face)` is what the DDIM functions call.

        Training passes `z_features` = [z_id, z_lnd] instead, so the z_face linear runs inside `forward` (as DDP
        expects of every trained parameter).
        """
        if (z_face is None) == (z_features is None):
            raise ValueError("pass exactly one of z_face or z_features")
        if z_features is not None:
            z_face = self.z_face(z_features.float())
        return self.unet(x_t, t, z_face)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(TRAINABLE_PREFIXES)}

    def trainable_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith(TRAINABLE_PREFIXES)]
