"""Deterministic DDIM (η = 0): inversion x0 → x_T and generation x_T → x0 (SPEC §1.3).

`ddim_invert` and `ddim_generate` are pure functions over tensors with one signature, `(model, x, cond, steps)`,
where `model(x_t, t, cond) -> eps` takes original-scale integer timesteps. Inversion runs N−1 steps and stops at
ᾱ of the last spaced step, exactly where generation (N steps) starts, so a round trip costs 2N−1 model calls.
Every step clamps x̂0 to [−1, 1] and recomputes ε from the clamped x̂0.

Precision follows the reference: coefficients are float64, cast to float32 per step; square roots of ᾱ_next/prev
are taken in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Optional

import numpy as np
import torch

from dva.diffusion.schedule import NoiseSchedule, ddim_timesteps

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# callback(index, t, x_after_step, x0_pred) — for recording states (tests, CLIP editing) or progress.
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class DDIMScheduler:
    """The spaced sampler for N steps: timesteps, their ᾱ, and the two update rules."""

    timesteps: tuple[int, ...]
    alphas_cumprod: np.ndarray  # [N] float64, ᾱ at the spaced steps
    # Per device: the float32 coefficient table (built once, so the sampling loop never copies from the host).
    _tables: dict = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    @lru_cache(maxsize=32)
    def create(num_steps: int, schedule: NoiseSchedule = NoiseSchedule()) -> "DDIMScheduler":
        ts = ddim_timesteps(num_steps, schedule.num_train_timesteps)
        full = schedule.alphas_cumprod
        # The reference re-derives spaced betas, then takes their cumulative product again.
        betas, last = [], 1.0
        for t in ts:
            betas.append(1.0 - full[t] / last)
            last = full[t]
        return DDIMScheduler(ts, np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def coefficients(self, device: torch.device) -> torch.Tensor:
        """[6, N] float32 on `device`: √(1/ᾱ), √(1/ᾱ−1) (float64, then cast, as the reference), then √ᾱ_prev,
        √(1−ᾱ_prev), √ᾱ_next, √(1−ᾱ_next) taken in float32 (ᾱ_{−1} = 1, ᾱ_N = 0). Row views are 0-dim tensors
        already on the device, so a step launches no host-to-device copy and never synchronises."""
        key = str(device)
        if key not in self._tables:
            ac = self.alphas_cumprod
            f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
            prev, nxt = f32(np.append(1.0, ac[:-1])), f32(np.append(ac[1:], 0.0))
            self._tables[key] = torch.stack([
                f32(np.sqrt(1.0 / ac)), f32(np.sqrt(1.0 / ac - 1.0)),
                prev.sqrt(), (1 - prev).sqrt(), nxt.sqrt(), (1 - nxt).sqrt(),
            ])
        return self._tables[key]

    def predict_x0(self, eps: torch.Tensor, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clamped x̂0 and the ε recomputed from it, at spaced index `index`."""
        recip, recipm1 = self.coefficients(x.device)[:2, index]
        x0 = (recip * x - recipm1 * eps).clamp(-1.0, 1.0)
        return x0, (recip * x - x0) / recipm1

    def step(self, eps: torch.Tensor, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One generation step from spaced index `index` to `index − 1` (ᾱ_{−1} = 1). Returns (x_prev, x̂0)."""
        x0, eps = self.predict_x0(eps, index, x)
        sqrt_prev, sqrt_one_minus_prev = self.coefficients(x.device)[2:4, index]
        return x0 * sqrt_prev + sqrt_one_minus_prev * eps, x0

    def invert_step(self, eps: torch.Tensor, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One inversion step from spaced index `index` to `index + 1`. Returns (x_next, x̂0)."""
        x0, eps = self.predict_x0(eps, index, x)
        sqrt_next, sqrt_one_minus_next = self.coefficients(x.device)[4:6, index]
        return x0 * sqrt_next + sqrt_one_minus_next * eps, x0


def _as_scheduler(steps: int | DDIMScheduler) -> DDIMScheduler:
    return steps if isinstance(steps, DDIMScheduler) else DDIMScheduler.create(int(steps))


def _eps(model: EpsModel, x: torch.Tensor, t: int, cond: torch.Tensor, autocast_dtype: Optional[torch.dtype]):
    tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    ctx = (
        torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None else contextlib.nullcontext()
    )
    with ctx:
        eps = model(x, tt, cond)
    return eps.float()


@torch.no_grad()
def ddim_invert(model: EpsModel, x0: torch.Tensor, cond: torch.Tensor, steps: int | DDIMScheduler, *,
                autocast_dtype: Optional[torch.dtype] = None, callback: Optional[StepCallback] = None) -> torch.Tensor:
    """x_T = deterministic DDIM inversion of x0 (in [−1, 1]) under `cond`, in N−1 model calls."""
    sched = _as_scheduler(steps)
    x = x0.float()
    for i in range(sched.num_steps - 1):
        t = sched.timesteps[i]
        x, x0_pred = sched.invert_step(_eps(model, x, t, cond, autocast_dtype), i, x)
        if callback is not None:
            callback(i, t, x, x0_pred)
    return x


@torch.no_grad()
def ddim_generate(model: EpsModel, x_T: torch.Tensor, cond: torch.Tensor, steps: int | DDIMScheduler, *,
                  autocast_dtype: Optional[torch.dtype] = None,
                  callback: Optional[StepCallback] = None) -> torch.Tensor:
    """x0 in [−1, 1] = deterministic DDIM generation from x_T under `cond`, in N model calls."""
    sched = _as_scheduler(steps)
    x = x_T.float()
    for i in reversed(range(sched.num_steps)):
        t = sched.timesteps[i]
        x, x0_pred = sched.step(_eps(model, x, t, cond, autocast_dtype), i, x)
        if callback is not None:
            callback(i, t, x, x0_pred)
    return x
