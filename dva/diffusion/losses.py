"""The DVA training objective (SPEC §1.4): L_simple on two noises at one t, plus masked x̂0 consistency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from dva.diffusion.ddim import EpsModel
from dva.diffusion.schedule import NoiseSchedule


@dataclass
class LossTerms:
    loss: torch.Tensor
    simple: torch.Tensor
    reg: torch.Tensor


def dva_loss(model: EpsModel, x0: torch.Tensor, cond: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
             reg_weight: float = 1.0, schedule: NoiseSchedule = NoiseSchedule(),
             t: Optional[torch.Tensor] = None, noise: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
             generator: Optional[torch.Generator] = None) -> LossTerms:
    """L = L_simple + reg_weight · L_reg for a batch of clean images x0 in [−1, 1].

    Each sample draws one t ~ U{0…T−1} and two noises ε1, ε2 at that same t; both noisy images go through the
    model in one batch, conditioned on `cond` (one row per sample). L_simple = |ε̂1 − ε1|₁ + |ε̂2 − ε2|₁ (mean over C,H,W, summed over the two draws, mean over
    the batch). L_reg = mean |m·x̂0,1 − m·x̂0,2| with unclamped x̂0 and gradients through both. `mask` ([B,1,H,W]
    or [B,H,W], 1 = face foreground) defaults to all ones.
    """
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.num_train_timesteps, (b,), device=x0.device, generator=generator)
    if noise is None:
        noise = (torch.randn(x0.shape, device=x0.device, generator=generator),
                 torch.randn(x0.shape, device=x0.device, generator=generator))
    ac = schedule.alpha_bar(t).view(b, 1, 1, 1)
    eps = torch.cat(noise)
    x_t = torch.sqrt(ac).repeat(2, 1, 1, 1) * x0.repeat(2, 1, 1, 1) + torch.sqrt(1 - ac).repeat(2, 1, 1, 1) * eps
    eps_hat = model(x_t, t.repeat(2), cond.repeat(2, 1)).float()

    simple = (eps_hat - eps).abs().mean(dim=(1, 2, 3)).view(2, b).sum(0).mean()
    ac2 = ac.repeat(2, 1, 1, 1)
    x0_hat = torch.sqrt(1 / ac2) * x_t - torch.sqrt(1 / ac2 - 1) * eps_hat
    m = torch.ones_like(x0[:, :1]) if mask is None else (mask if mask.dim() == 4 else mask[:, None]).to(x0.dtype)
    x0_1, x0_2 = x0_hat.chunk(2)
    reg = (m * x0_1 - m * x0_2).abs().mean()
    return LossTerms(simple + reg_weight * reg, simple, reg)
