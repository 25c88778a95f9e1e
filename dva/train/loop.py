"""One optimisation step of the autoencoder (SPEC §2): Adam, grad-norm clip, EMA, AMP on GPU.

This is the whole training logic; the Ray Train job only wraps it with data sharding, DDP and checkpointing, so the
same step runs in a unit test, a single process and a cluster.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from dva.diffusion.losses import dva_loss
from dva.config import nested_key
from dva.errors import ConfigError
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.ema import EMA
from dva.precision import autocast_dtype, check_precision


@dataclass
class OptimConfig:
    lr: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    reg_weight: float = 1.0
    # A precision (dva.precision): auto = bf16 autocast on CUDA, fp32 on CPU. fp16 adds a gradient scaler.
    amp: str = "auto"

    def validate(self, key: str) -> None:
        check_precision(self.amp, nested_key(key, "amp"))
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"config key `{nested_key(key, 'ema_decay')}`: {self.ema_decay} is not in [0, 1)")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ConfigError(f"config keys `{nested_key(key, 'lr')}` and `{nested_key(key, 'grad_clip')}` must be "
                              "positive")


@dataclass
class TrainState:
    model: nn.Module  # the DiffusionVideoAutoencoder, possibly wrapped in DistributedDataParallel
    ema: EMA
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    cfg: OptimConfig
    step: int = 0

    @property
    def module(self) -> DiffusionVideoAutoencoder:
        return getattr(self.model, "module", self.model)


def create_train_state(model: nn.Module, cfg: OptimConfig) -> TrainState:
    """Adam (no weight decay) over the trainable parameters; EMA initialised to the current weights."""
    module = getattr(model, "module", model)
    device = next(module.unet.parameters()).device
    optimizer = torch.optim.Adam(module.trainable_parameters(), lr=cfg.lr, weight_decay=0.0)
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype(cfg.amp, device) == torch.float16 else None
    return TrainState(model, EMA(module, cfg.ema_decay), optimizer, scaler, cfg)


def train_step(state: TrainState, batch: dict[str, torch.Tensor],
               generator: Optional[torch.Generator] = None) -> dict[str, float]:
    """One step on `batch`: `images` [B,3,H,W] in [−1,1]; optional `z_id`, `z_lnd` (computed by the frozen
    encoders when absent: training uses each frame's own z_id) and `mask` (L_reg region, all ones when absent)."""
    module = state.module
    images = batch["images"]
    z_id = batch["z_id"] if "z_id" in batch else module.encode_identity(images)
    z_lnd = batch["z_lnd"] if "z_lnd" in batch else module.encode_landmarks(images)
    features = torch.cat([z_id.float(), z_lnd.float()], dim=1)

    state.model.train()
    dtype = autocast_dtype(state.cfg.amp, images.device)
    ctx = torch.autocast(images.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with ctx:
        terms = dva_loss(lambda x, t, c: state.model(x, t, z_features=c), images, features, batch.get("mask"),
                         reg_weight=state.cfg.reg_weight, generator=generator)
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(terms.loss).backward()
        state.scaler.unscale_(state.optimizer)
    else:
        terms.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(module.trainable_parameters(), state.cfg.grad_clip)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.ema.update(module)
    state.step += 1
    return {"loss": terms.loss.item(), "loss_simple": terms.simple.item(), "loss_reg": terms.reg.item(),
            "grad_norm": float(grad_norm), "step": state.step}
