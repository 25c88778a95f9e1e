"""Stand-in weight files in the formats the real ones are released in, with seeded random (or chosen) values.

Tests that build the paper's presets need every configured file to exist and load; these writers make files that the
project's loaders (and the libraries behind them) read exactly as they would read the released ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def write_fan(path: Path, seed: int = 0) -> Path:
    """face-alignment's 2DFAN4-11f355bf06.pth.tar: a plain state dict of `face_alignment.models.FAN(4)`, fp16."""
    from face_alignment.models import FAN

    torch.manual_seed(seed)
    torch.save({k: v.half() for k, v in FAN(4).state_dict().items()}, path)
    return path


def write_s3fd(path: Path) -> Path:
    """face-alignment's s3fd-619a316812.pth: a plain state dict of its `s3fd` net. All zeros: every anchor scores
    0.5, below face-alignment's 0.5 threshold, so this detector finds no face."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.save({k: torch.zeros_like(v).half() for k, v in s3fd().state_dict().items()}, path)
    return path


ARCFACE_POOL = 16  # 112 / 16 = 7: the stand-in ArcFace pools to 3×7×7 and projects to 512


def write_arcface_onnx(path: Path, batch: int | str = "N", size: int = 112) -> np.ndarray:
    """An insightface-routable recognition ONNX, N×3×size×size → N×512 (average-pool, flatten, linear).
    Returns its weight matrix, so a test can compute what it must output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cells = 3 * (size // ARCFACE_POOL) ** 2
    weight = np.random.default_rng(0).standard_normal((512, cells)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["input.1"], ["pooled"], name="pool",
                             kernel_shape=[ARCFACE_POOL, ARCFACE_POOL], strides=[ARCFACE_POOL, ARCFACE_POOL]),
            helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "weight"], ["683"], name="fc", transB=1),
        ],
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, 512])],
        [numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return weight
