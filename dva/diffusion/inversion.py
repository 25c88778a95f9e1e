"""Inversion methods x0 → x_T for the deterministic DDIM sampler, and a registry that names them.

Notation (spaced steps j = 0 … N−1, a_j = √ᾱ_j, s_j = √(1−ᾱ_j), a_{−1} = 1, s_{−1} = 0). Generation is N DDIM
steps y_{j−1} = G_j(y_j), from y_{N−1} = x_T down to y_{−1} = x0, where

    G_j(y) = a_{j−1}·x̂0 + s_{j−1}·ε̂,   x̂0 = clamp((y − s_j·ε(y, t_j)) / a_j),   ε̂ = (y − a_j·x̂0) / s_j.

`ddim`: plain DDIM inversion (the reference, `ddim_invert`). It takes y_0 := x0 (ᾱ_0 ≈ 1) and then approximates the
inverse of G_{j+1} by evaluating ε at the known point y_j instead of the unknown y_{j+1}. Each step is off by a term
proportional to ε(y_{j+1}) − ε(y_j), and the errors add up over the trajectory: the round trip is only close at
large N (2N−1 UNet calls per frame for inversion plus one decode).

`fixed_point`: solve G_j(y_j) = y_{j−1} for every j = 0 … N−1 by fixed-point iteration (the idea of AIDI and ReNoise,
written here for the clamped DDIM step). Because y = a_j·x̂0 + s_j·ε̂ holds for any y, G_j is affine in y given ε̂:
G_j(y) = (a_{j−1}/a_j)·y + (s_{j−1} − a_{j−1}·s_j/a_j)·ε̂(y). Hence G_j(y) = y_{j−1} exactly when y is a fixed point of

    F_j(y) = y + (a_j / a_{j−1})·(y_{j−1} − G_j(y)),

which is the DDIM inversion formula with ε̂ evaluated at y itself. F_j contracts where s_j·‖∂ε/∂y‖ is small (all but
the noisiest steps of a smooth model), so a few iterations from a good start converge. Each iteration costs one
UNet call (the one inside G_j), and its residual y_{j−1} − G_j(y) says how far from exact the step still is.
The start for step j reuses the ε̂ of the last evaluation of the previous step (taken at a point within one
iteration of y_{j−1}) in a DDIM inversion step, so it costs no call; step 0 starts at y_0 = x0, DDIM's choice.
Unlike `ddim`, step 0 is solved too, so at convergence the round trip G_0 ∘ … ∘ G_{N−1} returns x0 up to float
rounding. Cost: N·K UNet calls per frame for K iterations (`ddim`: N−1); decoding stays the plain N-step DDIM
generation, so a stored x_T serves every later edit at N calls.

All methods are pure functions `(model, x0, cond, steps, *, autocast_dtype, callback) -> x_T`, like `ddim_invert`;
`invert(method, …)` dispatches on an `InversionConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from dva.diffusion.ddim import DDIMScheduler, EpsModel, StepCallback, _as_scheduler, _eps, ddim_invert
from dva.config import nested_key
from dva.errors import ConfigError

INVERSION_METHODS = ("ddim", "fixed_point")


@dataclass
class InversionConfig:
    """How x0 is inverted to x_T. `iterations` only matters for `fixed_point` (UNet calls per step)."""

    method: str = "ddim"
    iterations: int = 2

    def validate(self, key: str) -> None:
        if self.method not in INVERSION_METHODS:
            raise ConfigError(f"config key `{nested_key(key, 'method')}`: {self.method!r} is not one of "
                              f"{INVERSION_METHODS}")
        if self.iterations < 1:
            raise ConfigError(f"config key `{nested_key(key, 'iterations')}`: {self.iterations} must be at least 1")

    @property
    def label(self) -> str:
        """A short name for tables and stored-latent keys: `ddim` or `fixed_point×2`."""
        return self.method if self.method == "ddim" else f"{self.method}×{self.iterations}"

    def inversion_calls(self, steps: int) -> int:
        """UNet calls per frame that inverting at N = `steps` costs (a decode costs N more)."""
        return steps - 1 if self.method == "ddim" else steps * self.iterations


def _step_ratio(sched: DDIMScheduler, index: int, device: torch.device) -> torch.Tensor:
    """a_j / a_{j−1} at spaced index j, from the same float32 table the generation step uses."""
    coef = sched.coefficients(device)
    return 1.0 / (coef[0, index] * coef[2, index])


@torch.no_grad()
def fixed_point_invert(model: EpsModel, x0: torch.Tensor, cond: torch.Tensor, steps: int | DDIMScheduler, *,
                       iterations: int = 2, autocast_dtype: Optional[torch.dtype] = None,
                       callback: Optional[StepCallback] = None) -> torch.Tensor:
    """x_T such that DDIM generation returns x0 (to the fixed point's convergence), in N·`iterations` UNet calls."""
    sched = _as_scheduler(steps)
    target = x0.float()  # y_{j−1}
    eps_last: Optional[torch.Tensor] = None  # ε̂ of the previous step's last evaluation
    for j in range(sched.num_steps):
        t = sched.timesteps[j]
        y = target if eps_last is None else sched.invert_step(eps_last, j - 1, target)[0]
        ratio = _step_ratio(sched, j, y.device)
        for _ in range(iterations):
            eps = _eps(model, y, t, cond, autocast_dtype)
            regenerated, x0_pred = sched.step(eps, j, y)
            eps_last = sched.predict_x0(eps, j, y)[1]
            y = y + ratio * (target - regenerated)
        if callback is not None:
            callback(j, t, y, x0_pred)
        target = y
    return y


def invert(cfg: InversionConfig, model: EpsModel, x0: torch.Tensor, cond: torch.Tensor,
           steps: int | DDIMScheduler, *, autocast_dtype: Optional[torch.dtype] = None,
           callback: Optional[StepCallback] = None) -> torch.Tensor:
    """x_T of x0 by the method `cfg` names (`ddim` is exactly `ddim_invert`)."""
    if cfg.method == "ddim":
        return ddim_invert(model, x0, cond, steps, autocast_dtype=autocast_dtype, callback=callback)
    return fixed_point_invert(model, x0, cond, steps, iterations=cfg.iterations, autocast_dtype=autocast_dtype,
                              callback=callback)
