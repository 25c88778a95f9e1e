"""Exponential moving average of a model's trainable weights (inference uses the EMA weights)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

StateFn = Callable[[nn.Module], dict[str, torch.Tensor]]


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    fn = getattr(model, "trainable_state_dict", None)
    return fn() if fn is not None else model.state_dict()


class EMA:
    """Float32 shadow copies of the trainable state: ema ← decay·ema + (1 − decay)·live after each step.

    Only the trainable part is tracked (frozen encoders never change), so no copy of the whole model is made.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in _trainable_state(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        live = _trainable_state(model)
        for name, value in self.shadow.items():
            src = live[name].detach()
            if src.dtype.is_floating_point:
                value.mul_(self.decay).add_(src.float(), alpha=1.0 - self.decay)
            else:
                value.copy_(src)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}…")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])

    @contextlib.contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into `model` (e.g. for sample images during training)."""
        backup = {k: v.detach().clone() for k, v in _trainable_state(model).items()}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)
