"""The forward-process noise schedule and "ddimN" timestep spacing (SPEC §1.3)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


@dataclass(frozen=True)
class NoiseSchedule:
    """Linear β schedule over T steps, kept in float64 as the reference does (cast to float32 per use)."""

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    @property
    def betas(self) -> np.ndarray:
        return np.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=np.float64)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t as float32 for integer timesteps t (any shape), on t's device."""
        return torch.from_numpy(self.alphas_cumprod).to(t.device)[t].float()


@lru_cache(maxsize=64)
def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> tuple[int, ...]:
    """"ddimN" spacing: range(0, T, stride) with the smallest stride that gives exactly N steps.

    N=100 → 0, 10, …, 990; N=10 → 0, 100, …, 900 (never T−1).
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"number of DDIM steps must be in 1…{num_train_timesteps}, got {num_steps}")
    for stride in range(1, num_train_timesteps + 1):
        steps = range(0, num_train_timesteps, stride)
        if len(steps) == num_steps:
            return tuple(steps)
    raise ValueError(f"no uniform stride gives exactly {num_steps} steps out of {num_train_timesteps}")
