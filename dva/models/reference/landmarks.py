"""The reference landmark encoder E_lnd: MobileNetV2-GDConv regressing 68 (x, y) points → 102-d z_lnd.

The network is torchvision's MobileNetV2 `features`, then a global depthwise 7×7 conv ("GDConv") and a 1×1 conv to
136 outputs, each followed by BatchNorm and no activation. Its weights are the released
`mobilenet_224_model_best_gdconv_external.pth.tar`: a dict whose `state_dict` maps `module.<key>` to tensors (a
DataParallel save). The original class registers the MobileNetV2 twice, so that file also holds every `features`
tensor again under `pretrain_net.features.*` plus an unused 1000-way `pretrain_net.classifier.1.*`;
`official_to_module_state` folds those into the one copy the forward uses (`base_net.0.*`). In a reference DVA
checkpoint the same keys, without `module.`, sit under `encoder.lndnet.backbone.`.

z_lnd keeps the reference's quirks: points are clamped to [0, 1] before the jaw (points 0-16) is dropped, the layout
is x17, y17, x18, y18, …, and the channels are fed in RGB order with RGB ImageNet statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from dva.models.config import EncoderConfig
from dva.models.reference import FrozenModule, ImageNetNormalize, load_weights

EXPECTED_FILE = (
    "the landmark file mobilenet_224_model_best_gdconv_external.pth.tar: a dict whose `state_dict` maps "
    "`module.base_net.0.*`, `module.linear7.*`, `module.linear1.*` (and optionally the `module.pretrain_net.*` "
    "duplicates) to tensors"
)

NUM_POINTS = 68
JAW_POINTS = 17  # points 0-16 outline the jaw; the reference drops them from z_lnd
LANDMARK_DIM = 2 * (NUM_POINTS - JAW_POINTS)

_ALIAS_PREFIX = "pretrain_net.features."
_UNUSED_PREFIX = "pretrain_net.classifier."
_FEATURES_PREFIX = "base_net.0."


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm with no activation: the reference head's two "linear" blocks."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, bias=False, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels)


class MobileNetGDConv(nn.Module):
    """MobileNetV2 features → GDConv 7×7 depthwise + BN → 1×1 conv to 136 + BN; [B,3,224,224] → [B,136]."""

    def __init__(self) -> None:
        super().__init__()
        self.base_net = nn.Sequential(mobilenet_v2(weights=None).features)
        self.linear7 = ConvBN(1280, 1280, 7, groups=1280)
        self.linear1 = ConvBN(1280, 2 * NUM_POINTS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear1(self.linear7(self.base_net(x))).flatten(1)


def official_to_module_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of the released file (or of a checkpoint's `encoder.lndnet.backbone.` part) → `MobileNetGDConv` keys.

    Drops the `module.` prefix and the unused classifier; a `pretrain_net.features.*` tensor is the same tensor as
    its `base_net.0.*` twin in the original model, so it is used only when that twin is absent.
    """
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(_UNUSED_PREFIX):
            continue
        if key.startswith(_ALIAS_PREFIX):
            aliases[_FEATURES_PREFIX + key.removeprefix(_ALIAS_PREFIX)] = value
        else:
            out[key] = value
    for key, value in aliases.items():
        out.setdefault(key, value)
    return out


def z_lnd_from_points(points: torch.Tensor) -> torch.Tensor:
    """[B,136] or [B,68,2] normalised (x, y) → [B,102] z_lnd: clamp to [0,1] first, then drop the jaw (0-16).

    Every landmark backend lays out z_lnd this way, so the z_face linear sees the same order whichever made it.
    """
    points = points.clamp(0, 1).reshape(-1, NUM_POINTS, 2)
    return points[:, JAW_POINTS:].flatten(1)


def landmark_input(images: torch.Tensor, normalize: ImageNetNormalize) -> torch.Tensor:
    """[B,3,H,W] in [-1,1] → the network input: rows/cols 16:240 unless already 224 high, then ImageNet-normalised."""
    if images.shape[-2] != 224:
        images = images[:, :, 16:240, 16:240]
    return normalize(images)


class MobileNetLandmarkEncoder(FrozenModule):
    """E_lnd of the reference: [B,3,H,W] in [-1,1] (a 256 crop) → [B,102] clamped (x, y) of points 17-67."""

    dim = LANDMARK_DIM

    def __init__(self) -> None:
        super().__init__()
        self.normalize = ImageNetNormalize()
        self.backbone = MobileNetGDConv()
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return z_lnd_from_points(self.backbone(landmark_input(images.float(), self.normalize)))


def _file_state(content: Any) -> Any:
    """The released file's content (`{'state_dict': {...}}`, or a bare state dict) → `MobileNetGDConv` keys."""
    state = content.get("state_dict", content) if isinstance(content, Mapping) else content
    return official_to_module_state(state) if isinstance(state, Mapping) else state


def build_landmark_encoder(cfg: EncoderConfig, config_key: str, role: str) -> MobileNetLandmarkEncoder:
    """Registry builder for kind `reference_landmarks`: load `cfg.weights` (the GDConv .pth.tar) strictly."""
    encoder = MobileNetLandmarkEncoder()
    load_weights(encoder.backbone, cfg, config_key, EXPECTED_FILE, convert=_file_state)
    return encoder
