"""The UNet's GroupNorm chains (`GroupNorm32`), eager or fused for inference: float32 statistics → normalise → affine → (1+scale)·h + shift → SiLU.

The UNet's normalisation chains (SPEC §1.2) are, per ResBlock, GN→SiLU (in_layers), GN→time modulation→SiLU and
GN→z_face modulation→SiLU (out_layers); then the attention block's GN alone and the output's GN→SiLU. Eagerly a
chain is 4–7 passes over the activation (upcast, normalise, downcast, scale, shift, SiLU); fused it is two reads and
one write (`dva.models.fused_norm_kernels`). Inputs are read in their own dtype (bf16 under autocast) and every
operation runs in float32: where the eager chain rounds to bf16 after the norm, after (1+s) and after each of ·, +
and SiLU, the fused chain rounds once.

Triton is imported only by `use_fused_norms` (config `generate.norm_kernels: triton`). The kernels run on CUDA
tensors, and on CPU tensors only interpreted: `TRITON_INTERPRET=1` set before the first `use_fused_norms` (the
tests). They are the custom op `dva::group_norm_chain`, opaque to torch.compile, so a compiled UNet keeps one graph.
Inference only: no backward is defined, and a call that would need one is refused.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from dva.errors import ConfigError, DvaError

CONFIG_KEY = "generate.norm_kernels"
NORM_KERNELS = ("eager", "triton")


def _result_dtype(x: torch.Tensor, modulation: Optional[torch.Tensor]) -> torch.dtype:
    """The eager chain's dtype: the norm returns x's dtype, the modulation promotes it."""
    return x.dtype if modulation is None else torch.promote_types(x.dtype, modulation.dtype)


@torch.library.custom_op("dva::group_norm_chain", mutates_args=())
def _group_norm_chain_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         modulation: Optional[torch.Tensor], num_groups: int, eps: float,
                         silu: bool) -> torch.Tensor:
    from dva.models import fused_norm_kernels

    return fused_norm_kernels.group_norm_chain(x, weight, bias, modulation, num_groups, eps, silu,
                                               _result_dtype(x, modulation))


@_group_norm_chain_op.register_fake
def _(x, weight, bias, modulation, num_groups, eps, silu):
    return torch.empty_like(x, dtype=_result_dtype(x, modulation))


def group_norm_chain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, modulation: Optional[torch.Tensor],
                     num_groups: int, eps: float, silu: bool) -> torch.Tensor:
    """The fused chain; `modulation` is the [B, 2C] projection (scale | shift) or None. Inference only."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, modulation)):
        raise DvaError(f"the fused GroupNorm kernels (`{CONFIG_KEY}: triton`) have no backward: run the UNet under "
                       f"torch.no_grad() / torch.inference_mode(), or use `eager` for training")
    return _group_norm_chain_op(x, weight, bias, modulation, num_groups, eps, silu)


def _modulate(h: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    scale, shift = projected[..., None, None].chunk(2, dim=1)
    return h * (1 + scale) + shift


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype: bf16/fp16 statistics are too coarse.

    `chain` is the whole normalisation chain of the UNet: norm → optional (1+scale)·h + shift → optional SiLU,
    eager by default or fused (`fused`, set by `use_fused_norms`)."""

    fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chain(x)

    def chain(self, x: torch.Tensor, modulation: torch.Tensor | None = None, silu: bool = False) -> torch.Tensor:
        if self.fused:
            return group_norm_chain(x, self.weight, self.bias, modulation, self.num_groups, self.eps, silu)
        h = F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)
        if modulation is not None:
            h = _modulate(h, modulation)
        return F.silu(h) if silu else h


def use_fused_norms(module: nn.Module, device: torch.device | str, enabled: bool = True) -> nn.Module:
    """Route every GroupNorm chain of `module` through the fused kernels (or back to eager); returns `module`.

    Checks up front that the kernels can run on `device`: CUDA, or the CPU under TRITON_INTERPRET=1 (tests)."""
    if enabled:
        device = torch.device(device)
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ConfigError(f"config key `{CONFIG_KEY}`: the triton kernels run on CUDA devices (on the CPU only "
                              f"interpreted, TRITON_INTERPRET=1, for tests); this stage runs on {device}: use `eager`")
        try:
            import dva.models.fused_norm_kernels  # noqa: F401  (fails here, not at the first batch)
        except ImportError as err:
            raise ConfigError(f"config key `{CONFIG_KEY}`: triton is not importable here ({err}); install triton "
                              f"(CUDA builds of torch ship it) or use `eager`") from err
    for m in module.modules():
        if isinstance(m, GroupNorm32):
            m.fused = enabled
    return module
