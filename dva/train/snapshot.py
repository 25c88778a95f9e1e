"""A training snapshot: the folder each Ray Train checkpoint holds, written and read without Ray.

    dva.safetensors     EMA weights + model config (a dva checkpoint: `model.checkpoint=<file>` in the edit job)
    model.safetensors   the live trainable weights (same format, `weights: raw`)
    optimizer.pt        Adam state (and the fp16 grad scaler's), read back with `weights_only=True`
    state.json          step, each worker's data position, the steps logged since the previous snapshot
    samples.png         the sample grid (`dva.train.preview`)

The EMA is stored once, in dva.safetensors, and restored from it: the exported model is the resumed state.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dva.errors import ConfigError
from dva.models.autoencoder import TRAINABLE_PREFIXES
from dva.models.checkpoint import describe_mismatch
from dva.runtime.weights import read_checkpoint, save_checkpoint
from dva.train.loop import TrainState

EMA_FILE = "dva.safetensors"
LIVE_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
SAMPLES_FILE = "samples.png"


def save_snapshot(folder: str | Path, state: TrainState, meta: dict) -> None:
    """Write the snapshot of `state` (with `meta` merged into state.json) into `folder`."""
    folder = Path(folder)
    save_checkpoint(folder / EMA_FILE, state.module, state.ema.state_dict(), kind="ema")
    save_checkpoint(folder / LIVE_FILE, state.module, kind="raw")
    scaler = state.scaler.state_dict() if state.scaler is not None else None
    torch.save({"optimizer": state.optimizer.state_dict(), "scaler": scaler}, folder / OPTIMIZER_FILE)
    (folder / STATE_FILE).write_text(json.dumps({**meta, "step": state.step}))


def load_snapshot(folder: str | Path, state: TrainState) -> dict:
    """Restore weights, EMA, optimiser and step into `state` (built for the same model config); return state.json."""
    folder = Path(folder)
    live, _ = read_checkpoint(str(folder / LIVE_FILE), "resume checkpoint")
    ema, _ = read_checkpoint(str(folder / EMA_FILE), "resume checkpoint")
    problem = describe_mismatch(state.module.trainable_state_dict(), live, TRAINABLE_PREFIXES)
    if problem:
        raise ConfigError(f"checkpoint {folder} does not fit the configured model ({problem}); train with the "
                          "model config it was made with, or start a run under another `name`")
    state.module.load_state_dict(live, strict=False)
    state.ema.load_state_dict(ema)
    device = next(state.module.unet.parameters()).device
    saved = torch.load(folder / OPTIMIZER_FILE, map_location=device, weights_only=True)
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.scaler is not None and saved["scaler"] is not None:
        state.scaler.load_state_dict(saved["scaler"])
    meta = json.loads((folder / STATE_FILE).read_text())
    state.step = int(meta["step"])
    return meta
