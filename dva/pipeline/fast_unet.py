"""Stage B's UNet as configured (`generate.*`): fused norm kernels, cuDNN autotuning, torch.compile settings and
a compile cache shared by the actors of a node.

Kept apart from the model: the same weights run eagerly everywhere else (training, stage A, `dva eval`).
"""

from __future__ import annotations

import os

import torch
import torch._functorch.config
import torch._inductor.config
from torch import nn

from dva.models.unet import use_fused_norms
from dva.pipeline.config import GenerateStageConfig


def use_compile_cache(folder: str) -> None:
    """Keep this process's Inductor caches (FX graphs, AOT autograd, generated kernels) in `folder`.

    Call before the first compile: a later process that compiles the same graph with the same torch, device and
    settings loads the result from here instead of generating and building its kernels again."""
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True


def prepare_unet(unet: nn.Module, settings: GenerateStageConfig, device: torch.device) -> nn.Module:
    """The UNet stage B runs: `unet` itself (its norms switched as configured) or its compiled wrapper."""
    use_fused_norms(unet, device, enabled=settings.norm_kernels == "triton")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    if not settings.compile:
        return unet
    if settings.compile_cache_dir:
        use_compile_cache(settings.compile_cache_dir)
    # A process-wide Inductor setting (torch.compile refuses `options` beside a `mode`); one UNet per actor.
    torch._inductor.config.coordinate_descent_tuning = settings.coordinate_descent_tuning
    return torch.compile(unet, dynamic=False, mode=settings.compile_mode, fullgraph=settings.compile_fullgraph)
