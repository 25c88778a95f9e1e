"""The reference DVA's frozen networks, written here, loading the reference weight files as they were released.

`arcface` (identity, IR-SE-50), `landmarks` (MobileNetV2-GDConv) and `bisenet` (face parser) each build their network
with exactly the state-dict keys of the released file, so a file loads only if every key and shape fits: a wrong
file fails at start-up with a message that says what was expected, never silently with half its weights random.

This package file holds what the three share: the frozen-module behaviour, the ImageNet input normalisation, and
`load_weights` (check the local file, read it, load it exactly). Files are read with `weights_only=True` (no pickled
code runs) or as safetensors by suffix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from dva.errors import MissingWeightsError
from dva.models.config import EncoderConfig
from dva.models.weight_file import local_weight_file

# ImageNet statistics (RGB), used by the landmark net and the face parser on [0, 1] images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenModule(nn.Module):
    """A pretrained network that never trains: `train()` is a no-op, so BatchNorm always uses its stored statistics.

    Subclasses call `freeze()` once their layers exist. Parameters take no gradient, but inputs still can.
    """

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenModule:
        return super().train(False)


class ImageNetNormalize(nn.Module):
    """[-1, 1] RGB images → ImageNet-normalised. Mean/std are non-persistent buffers: they follow `.to(device)` but
    are not state-dict entries, matching the reference checkpoints, which do not hold them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ((images + 1) / 2 - self.mean) / self.std


def weight_file(cfg: EncoderConfig, config_key: str, expected: str) -> Path:
    """The local file `cfg.weights` names; a missing file's error also says what file was expected, so the user knows
    which download to look for."""
    try:
        return local_weight_file(cfg.weights, f"{config_key}.weights")
    except MissingWeightsError as err:
        err.args = (f"{err.args[0]} Expected: {expected}.",)
        raise


def read_weight_file(path: Path, config_key: str, expected: str) -> Any:
    """Load `path` without running pickled code: safetensors by suffix, else `torch.load(weights_only=True)`."""
    try:
        if path.suffix == ".safetensors":
            return safetensors.torch.load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, or a pickle holding more than tensors: one clear error
        raise MissingWeightsError(
            str(path), config_key, f"cannot be read ({type(err).__name__}: {err}); expected {expected}"
        ) from None


def load_exact(
    module: nn.Module, state: Any, *, path: Path, config_key: str, expected: str
) -> None:
    """Load `state` into `module` only when its keys and shapes are exactly the module's.

    BatchNorm `num_batches_tracked` counters may be absent (files saved by torch < 0.4.1 lack them); they are never
    read in eval mode, so the module's own are kept.
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MissingWeightsError(str(path), config_key, f"is not a state dict of tensors; expected {expected}")
    own = module.state_dict()
    state = dict(state)
    for key in own:
        if key.endswith(".num_batches_tracked"):
            state.setdefault(key, own[key])
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    reshaped = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own.keys() & state.keys()
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or reshaped:
        problems = [
            f"{label} {len(keys)} keys (e.g. {', '.join(keys[:3])})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape in", reshaped))
            if keys
        ]
        raise MissingWeightsError(str(path), config_key, f"{'; '.join(problems)}. Expected {expected}")
    module.load_state_dict(state)


def load_weights(
    module: nn.Module,
    cfg: EncoderConfig,
    config_key: str,
    expected: str,
    convert: Callable[[Any], Any] = lambda content: content,
) -> None:
    """Find, read and exactly load the file `cfg.weights` into `module`; `convert` maps the file's content (a
    released file's wrapper dict and key names) to `module`'s state dict."""
    path = weight_file(cfg, config_key, expected)
    key = f"{config_key}.weights"
    load_exact(module, convert(read_weight_file(path, key, expected)), path=path, config_key=key, expected=expected)
