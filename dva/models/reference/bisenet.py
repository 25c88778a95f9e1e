"""The reference face parser: BiSeNet (ResNet-18 context path, 19 CelebAMask-HQ classes) → foreground masks.

The network is the face-parsing BiSeNet whose released weights are `79999_iter.pth`, a plain state dict keyed
`cp.*` (context path: `cp.resnet.*`, attention refinement, heads), `ffm.*` (feature fusion) and `conv_out*.*`
(outputs); this variant has no spatial path, the ResNet's 1/8 features stand in for it. The two auxiliary outputs
(`conv_out16`, `conv_out32`) only served training: they are built so the file loads exactly, and never run. In a
reference DVA checkpoint the same keys sit under `encoder.bgnet.backbone.`.

The masks (SPEC §1.5) come from the class map: the training mask keeps every class except background, cloth and
hat; the paste mask used when editing also drops ears, neck and hair, so an edit never pastes over them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dva.models.config import EncoderConfig
from dva.models.reference import FrozenModule, ImageNetNormalize, load_weights

EXPECTED_FILE = (
    "the BiSeNet face-parser file 79999_iter.pth: a plain state dict (no wrapper, no prefix) with keys like "
    "`cp.resnet.conv1.weight`, `ffm.convblk.conv.weight`, `conv_out.conv_out.weight`"
)

NUM_CLASSES = 19
BACKGROUND, L_EAR, R_EAR, NECK, CLOTH, HAIR, HAT = 0, 7, 8, 14, 16, 17, 18
TRAINING_EXCLUDED = (BACKGROUND, CLOTH, HAT)
PASTE_EXCLUDED = TRAINING_EXCLUDED + (L_EAR, R_EAR, NECK, HAIR)
PARSE_SIZE = 512  # the parser's working resolution; crops are upsampled (nearest) to it


class ConvBNReLU(nn.Module):
    """Conv (no bias) → BatchNorm → ReLU, the parser's basic block."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a strided 1×1 conv + BN whenever width or stride changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18Features(nn.Module):
    """ResNet-18 without its classifier, returning the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128, 1))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256, 1))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


def _channel_gate(feat: torch.Tensor, *layers: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Global-average-pool `feat`, run it through `layers`, and use a sigmoid of the result to scale `feat`."""
    gate = F.adaptive_avg_pool2d(feat, 1)
    for layer in layers:
        gate = layer(gate)
    return feat * torch.sigmoid(gate)


class AttentionRefinement(nn.Module):
    """ConvBNReLU, then a channel gate from its pooled output (1×1 conv + BN)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _channel_gate(self.conv(x), self.conv_atten, self.bn_atten)


class ContextPath(nn.Module):
    """ResNet-18 features refined top-down: 1/32 (plus its global context) → 1/16 → 1/8, nearest upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        up32 = F.interpolate(self.arm32(feat32) + context, feat16.shape[-2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, feat8.shape[-2:], mode="nearest")
        return feat8, self.conv_head16(up16)


class FeatureFusion(nn.Module):
    """Concatenate the two 1/8 paths, ConvBNReLU 1×1, then add a channel-gated copy (bottleneck ÷4)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, kernel=1)
        self.conv1 = nn.Conv2d(out_channels, out_channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels // 4, out_channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        return feat + _channel_gate(feat, self.conv1, F.relu, self.conv2)


class OutputHead(nn.Module):
    """ConvBNReLU 3×3 then a 1×1 conv to class logits."""

    def __init__(self, in_channels: int, mid_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels)
        self.conv_out = nn.Conv2d(mid_channels, NUM_CLASSES, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """[B,3,H,W] ImageNet-normalised → [B,19,H,W] class logits (main output, bilinear, align_corners=True)."""

    def __init__(self) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256)
        self.conv_out16 = OutputHead(128, 64)  # training-only auxiliary heads: in the file, never run
        self.conv_out32 = OutputHead(128, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=True)


def training_mask(classes: torch.Tensor) -> torch.Tensor:
    """Foreground for the training loss (SPEC §1.4): every class but background, cloth and hat."""
    return ~torch.isin(classes, torch.tensor(TRAINING_EXCLUDED, device=classes.device))


def paste_mask(classes: torch.Tensor) -> torch.Tensor:
    """Region an edit is pasted into (SPEC §1.5): the training mask without ears, neck and hair."""
    return ~torch.isin(classes, torch.tensor(PASTE_EXCLUDED, device=classes.device))


class FaceParserMasker(FrozenModule):
    """BiSeNet on crops: `classes` gives the class map, calling it gives the training (or paste) mask.

    Like the reference, a crop is upsampled (nearest) to 512, mapped [-1,1] → [0,1] and ImageNet-normalised; the
    512 class map is brought back to the crop size with nearest sampling.
    """

    def __init__(self, paste: bool = False, backbone: BiSeNet | None = None):
        super().__init__()
        self.paste = paste
        self.normalize = ImageNetNormalize()
        self.backbone = backbone if backbone is not None else BiSeNet()
        self.freeze()

    def classes(self, crops: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] → [B,H,W] int64 CelebAMask-HQ class indices."""
        x = F.interpolate(crops.float().clamp(-1, 1), (PARSE_SIZE, PARSE_SIZE), mode="nearest")
        labels = self.backbone(self.normalize(x)).argmax(dim=1, keepdim=True)
        return F.interpolate(labels.float(), crops.shape[-2:], mode="nearest").squeeze(1).long()

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        classes = self.classes(crops)
        return paste_mask(classes) if self.paste else training_mask(classes)


def build_face_parser(cfg: EncoderConfig, config_key: str, paste: bool = False) -> FaceParserMasker:
    """Load `cfg.weights` (79999_iter.pth) strictly into a masker giving the training mask (or the paste mask).

    The paste-mask masker for the same network is `FaceParserMasker(paste=True, backbone=masker.backbone)`.
    """
    masker = FaceParserMasker(paste=paste)
    load_weights(masker.backbone, cfg, config_key, EXPECTED_FILE)
    return masker
