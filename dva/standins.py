"""Model files in the real formats and architectures of the front end's networks, with random weights.

No pretrained weights can be fetched here, and speed does not depend on weight values, so tests, rehearsals and
`benchmarks/face_frontend.py` write these files and load them through exactly the code paths real files take:
- `write_scrfd_onnx`: an SCRFD-style detector as insightface's ONNX files are laid out (3 strides, 2 anchors, score /
  box / 5-point outputs, any input size). At `width=1.0` its backbone, PAFPN neck and heads follow SCRFD-10G's
  stage widths and depths (≈ the real model's GFLOP, see the benchmark); smaller widths give test-sized files.
- `write_landmark68_onnx`: a 192² → 3309 network, the layout insightface reads as 1k3d68 (68 3-D points + pose).
- `write_arcface_onnx`: a 112² → 512 IResNet, the layout of insightface's ArcFace files (`w600k_r50.onnx` at
  `layers=(3, 4, 14, 3)`).
- `write_fan` / `write_s3fd`: face-alignment's own FAN (2DFAN-4) and S3FD modules, saved as it stores them.
The stand-in detectors find no face (a random detector would find hundreds, each sent to the landmark network):
both score heads are set to score every anchor ≈ 0. (An all-zero S3FD scores every anchor 0.5: its threshold
rejects them all, but only after a Python loop over every anchor above its 0.05 pre-filter, which a real S3FD
never runs: ≈ 0.8 s per 640-px frame, which would be mistaken for the detector's cost.)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout
                     else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def _stage(cin: int, cout: int, depth: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*[_Basic(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(depth)])


class ScrfdLike(nn.Module):
    """SCRFD-10G's shape: ResNet-v1e basic-block backbone (widths 56/88/88/224, depths 3/4/2/3), PAFPN at 56
    channels, shared 3-conv heads at 80 channels; outputs score, box and keypoints for strides 8, 16, 32."""

    strides = (8, 16, 32)
    anchors = 2

    def __init__(self, width: float = 1.0, depth: int = 0):
        super().__init__()
        w = [max(4, round(c * width)) for c in (28, 56, 88, 88, 224)]
        depths = (3, 4, 2, 3) if depth == 0 else (depth,) * 4
        neck, head = max(4, round(56 * width)), max(4, round(80 * width))
        self.stem = nn.Sequential(_conv(3, w[0], 2), _conv(w[0], w[0]), _conv(w[0], w[1]), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.ModuleList([_stage(w[1], w[1], depths[0], 1), _stage(w[1], w[2], depths[1], 2),
                                     _stage(w[2], w[3], depths[2], 2), _stage(w[3], w[4], depths[3], 2)])
        self.lateral = nn.ModuleList([nn.Conv2d(c, neck, 1) for c in w[2:]])
        self.smooth = nn.ModuleList([_conv(neck, neck) for _ in w[2:]])
        self.down = nn.ModuleList([_conv(neck, neck, 2) for _ in w[3:]])
        self.head = nn.Sequential(_conv(neck, head), _conv(head, head), _conv(head, head))
        self.score = nn.Conv2d(head, self.anchors, 3, 1, 1)
        self.box = nn.Conv2d(head, 4 * self.anchors, 3, 1, 1)
        self.kps = nn.Conv2d(head, 10 * self.anchors, 3, 1, 1)
        for layer in (self.score, self.box, self.kps):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.constant_(self.score.bias, -20.0)  # sigmoid ≈ 0: no anchor passes any threshold

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        laterals = [conv(f) for conv, f in zip(self.lateral, feats[1:])]
        for i in (1, 0):  # top-down
            laterals[i] = laterals[i] + nn.functional.interpolate(laterals[i + 1], size=laterals[i].shape[-2:])
        outs = [conv(f) for conv, f in zip(self.smooth, laterals)]
        for i, down in enumerate(self.down):  # bottom-up (PAFPN)
            outs[i + 1] = outs[i + 1] + down(outs[i])
        heads = [self.head(o) for o in outs]

        def flat(t, channels):  # [1, A*C, H, W] -> [H*W*A, C], insightface's unbatched SCRFD layout
            return t.permute(0, 2, 3, 1).reshape(-1, channels)

        return (*[flat(torch.sigmoid(self.score(h)), 1) for h in heads], *[flat(self.box(h), 4) for h in heads],
                *[flat(self.kps(h), 10) for h in heads])


class _IBasic(nn.Module):
    """IResNet's block: BN-conv-BN-PReLU-conv-BN, with a projected skip when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.PReLU(cout), nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout
                     else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return self.body(x) + self.skip(x)


class IResNet(nn.Module):
    """insightface's ArcFace backbone (iresnet50 at layers 3/4/14/3, widths 64-512): input_hw² → embedding."""

    def __init__(self, layers=(3, 4, 14, 3), width: float = 1.0, embedding: int = 512, input_hw: int = 112):
        super().__init__()
        w = [max(4, round(c * width)) for c in (64, 64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.PReLU(w[0]))
        blocks, cin = [], w[0]
        for cout, depth in zip(w[1:], layers):
            blocks += [_IBasic(cin if i == 0 else cout, cout, 2 if i == 0 else 1) for i in range(depth)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        side = input_hw // 16
        self.embed = nn.Sequential(nn.BatchNorm2d(cin), nn.Flatten(), nn.Linear(cin * side * side, embedding),
                                   nn.BatchNorm1d(embedding))

    def forward(self, x):
        return self.embed(self.blocks(self.stem(x)))


def _export(model: nn.Module, path: str | Path, size: int, dynamic_hw: bool) -> Path:
    model.eval()
    axes = {"input.1": {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["input.1"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return Path(path)


def write_scrfd_onnx(path: str | Path, width: float = 1.0, depth: int = 0, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return _export(ScrfdLike(width, depth), path, 640, dynamic_hw=True)


def write_landmark68_onnx(path: str | Path, width: float = 1.0, layers=(3, 4, 6, 3), seed: int = 0) -> Path:
    """1k3d68's file layout (192² in, 3309 = 1103 × (x, y, z) out; the last 68 rows are the points)."""
    torch.manual_seed(seed)
    return _export(IResNet(layers, width, embedding=3309, input_hw=192), path, 192, dynamic_hw=False)


def write_arcface_onnx(path: str | Path, width: float = 1.0, layers=(3, 4, 14, 3), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return _export(IResNet(layers, width), path, 112, dynamic_hw=False)


def write_fan(path: str | Path, seed: int = 0) -> Path:
    """face-alignment's 2DFAN-4 with random weights, saved as it ships (a half-precision state dict)."""
    from face_alignment.models import FAN

    torch.manual_seed(seed)
    torch.save({k: v.half() for k, v in FAN(4).state_dict().items()}, str(path))
    return Path(path)


def write_s3fd(path: str | Path) -> Path:
    """face-alignment's S3FD, zero weights except the background biases of its score heads: finds no face and
    costs what the real one costs."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    state = {k: torch.zeros_like(v) for k, v in s3fd().state_dict().items()}
    for key, bias in state.items():
        if key.endswith("_mbox_conf.bias"):  # channel 0 is background (conv3_3: 0-2, max-pooled), the last is face
            bias[:-1] = 20.0
    torch.save({k: v.half() for k, v in state.items()}, str(path))
    return Path(path)
