"""The reference identity encoder E_id: ArcFace IR-SE-50 on a fixed crop of the aligned face, 512-d, L2-normalised.

The network is the 112×112 IR-SE-50 of the InsightFace_Pytorch / pSp / e4e family; the weights are the released
`model_ir_se50.pth`, a plain state dict whose keys (`input_layer.*`, `body.N.*`, `output_layer.*`) this module's
`IRSE50` reproduces exactly. In a reference DVA checkpoint the same tensors sit under `encoder.idnet.backbone.`,
which is why the encoder keeps the network as `.backbone`.

The crop is the reference one, not ArcFace's usual alignment: an FFHQ-style 256 crop, rows 35:223 and cols 32:220,
average-pooled to 112 (see `arcface_crop`); the network sees [-1, 1] values with no other normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dva.models.config import EncoderConfig
from dva.models.reference import FrozenModule, load_weights

EXPECTED_FILE = (
    "the IR-SE-50 file model_ir_se50.pth: a plain state dict (no wrapper, no prefix) with keys like "
    "`input_layer.0.weight`, `body.0.res_layer.1.weight`, `output_layer.3.weight`"
)

# Residual units per stage of the 50-layer variant and each stage's width; every stage starts with a stride-2 unit.
_STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))


class SqueezeExcite(nn.Module):
    """Channel attention: global pool → 1×1 bottleneck (÷16) → ReLU → 1×1 → sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * gate


class ResidualUnitSE(nn.Module):
    """Pre-activation "IR-SE" unit: BN → conv3×3 → PReLU → conv3×3 (stride) → BN → SE, plus a shortcut.

    The shortcut is a strided identity (1×1 max-pool) when the width stays, else a strided 1×1 conv + BN.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if in_channels == out_channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """IR-SE-50 for 112×112 input → 512-d embedding (not normalised), keyed like `model_ir_se50.pth`."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        # Registered before `body`, as in the file. Dropout(0.6) and Flatten hold no weights but keep the file's
        # indices (Linear at 3, final BN at 4).
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(), nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512)
        )
        units: list[nn.Module] = []
        width = 64
        for out_width, count in _STAGES:
            units.append(ResidualUnitSE(width, out_width, 2))
            units += [ResidualUnitSE(out_width, out_width, 1) for _ in range(count - 1)]
            width = out_width
        self.body = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


def arcface_crop(images: torch.Tensor) -> torch.Tensor:
    """The reference E_id input: [B,3,H,W] in [-1,1] → [B,3,112,112], values still in [-1,1].

    A crop that is not 256 high is first average-pooled to 256×256 (as the reference does). Then rows 35:223 and
    cols 32:220 (188×188) are average-pooled to 112; 188/112 is not an integer, so the pooling windows vary in size,
    which is what the reference weights were used with (a bilinear resize would differ).
    """
    if images.shape[-2] != 256:
        images = F.adaptive_avg_pool2d(images, (256, 256))
    return F.adaptive_avg_pool2d(images[:, :, 35:223, 32:220], (112, 112))


class ArcFaceIdentityEncoder(FrozenModule):
    """E_id of the reference: crop → IR-SE-50 → L2-normalised 512-d z_id."""

    dim = 512

    def __init__(self) -> None:
        super().__init__()
        self.backbone = IRSE50()
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(arcface_crop(images.float())), dim=1)


def build_identity_encoder(cfg: EncoderConfig, config_key: str, role: str) -> ArcFaceIdentityEncoder:
    """Registry builder for kind `reference_arcface`: load `cfg.weights` (model_ir_se50.pth) strictly."""
    encoder = ArcFaceIdentityEncoder()
    load_weights(encoder.backbone, cfg, config_key, EXPECTED_FILE)
    return encoder
