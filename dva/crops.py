"""Aligned face crops between their stored form (uint8 HWC) and the model's (float NCHW in [−1, 1])."""

from __future__ import annotations

import numpy as np
import torch


def crops_to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 [n, S, S, 3] → float [n, 3, S, S] in [−1, 1], in standard (NCHW-contiguous) layout."""
    return (torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0).contiguous()


def tensor_to_crops(images: torch.Tensor) -> np.ndarray:
    """float [n, 3, S, S] in [−1, 1] → uint8 [n, S, S, 3]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
