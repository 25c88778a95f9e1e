"""The sample grid written with each checkpoint: how the EMA model reconstructs frames and swaps identities."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from dva.diffusion import ddim_generate, ddim_invert
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.crops import tensor_to_crops


def pick_preview_rows(videos: list[str], count: int) -> list[int]:
    """Up to `count` row indices of a batch, one per video first (so identity swaps mix different people)."""
    first: dict[str, int] = {}
    for i, vid in enumerate(videos):
        first.setdefault(vid, i)
    rows = list(first.values())[:count]
    rows += [i for i in range(len(videos)) if i not in rows][: count - len(rows)]
    return rows


@torch.no_grad()
def sample_grid(model: DiffusionVideoAutoencoder, images: torch.Tensor, z_id: torch.Tensor, z_lnd: torch.Tensor,
                steps: int, autocast_dtype: Optional[torch.dtype] = None) -> np.ndarray:
    """RGB uint8 [3·S, n·S, 3]. Rows: the n input crops; their DDIM reconstructions (invert N−1 steps, generate N);
    identity swaps: each frame's x_T decoded with the z_id of the next frame (of another video where possible)."""
    cond = model.face_code(z_id, z_lnd)
    x_T = ddim_invert(model, images, cond, steps, autocast_dtype=autocast_dtype)
    recon = ddim_generate(model, x_T, cond, steps, autocast_dtype=autocast_dtype)
    swap = ddim_generate(model, x_T, model.face_code(z_id.roll(1, dims=0), z_lnd), steps,
                         autocast_dtype=autocast_dtype)
    return np.concatenate([np.concatenate(list(tensor_to_crops(x)), axis=1) for x in (images, recon, swap)], axis=0)
