"""dva checkpoints: one safetensors file holding the trainable weights (EMA by default) and the model config.

Everything here works on local files and state dicts: `write_checkpoint` writes one, `checkpoint_state` reads one
(a reference Lightning `.ckpt` is converted on the fly, see `dva.models.reference.convert`) and `build_model` builds
a model from a config and a checkpoint's state. `dva.runtime.weights` resolves URIs to local files around these and
writes checkpoints atomically (`load_model`, `save_checkpoint`, `read_checkpoint`, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dva.config import to_yaml
from dva.errors import MissingWeightsError
from dva.models.autoencoder import TRAINABLE_PREFIXES, DiffusionVideoAutoencoder
from dva.models.config import ModelConfig
from dva.models.reference.convert import reference_parts, reference_state_dict

FORMAT = "dva-checkpoint-v1"


def write_checkpoint(path: Path, model: DiffusionVideoAutoencoder,
                     weights: Mapping[str, torch.Tensor] | None = None, *, kind: str = "ema") -> None:
    """Write `weights` (default: the model's trainable state) and the model config to the local file `path`."""
    state = {k: v.detach().float().contiguous().cpu() for k, v in (weights or model.trainable_state_dict()).items()}
    save_file(state, str(path), metadata={"format": FORMAT, "weights": kind, "config": to_yaml(model.cfg)})


MAX_HEADER_BYTES = 100_000_000  # a safetensors header beyond this is not one (dva256's is ≈ 60 kB)


@dataclass(frozen=True)
class CheckpointHeader:
    """What a safetensors file's header says: each tensor's shape, the metadata, and the bytes of tensor data."""

    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]
    data_bytes: int


def read_checkpoint_header(read: Callable[[int, int], bytes], file_size: int, name: str,
                           config_key: str) -> CheckpointHeader:
    """The header of the dva checkpoint `name` (`file_size` bytes) from two reads `read(start, end)`: the 8-byte
    length, then the JSON header; a local file or ranged reads of an object, the tensors never read. A file that is
    no safetensors file, is shorter than its header says (a truncated upload) or lacks the dva `format` metadata
    raises MissingWeightsError naming `name` and `config_key`."""
    head = read(0, 8) if file_size >= 8 else b""
    length = int.from_bytes(head, "little") if len(head) == 8 else 0
    if not 2 <= length <= min(MAX_HEADER_BYTES, file_size - 8):
        raise MissingWeightsError(name, config_key, "is not a readable safetensors file (no header)")
    try:
        header = json.loads(read(8, 8 + length))
        meta = dict(header.pop("__metadata__", None) or {})
        shapes = {k: tuple(int(n) for n in v["shape"]) for k, v in header.items()}
        data_bytes = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise MissingWeightsError(name, config_key, f"is not a readable safetensors file ({err})") from None
    if file_size < 8 + length + data_bytes:
        raise MissingWeightsError(name, config_key, f"is truncated: {file_size} bytes, its header describes "
                                                    f"{8 + length + data_bytes}; upload it again")
    if meta.get("format") != FORMAT:
        raise MissingWeightsError(name, config_key, f"lacks the `format: {FORMAT}` metadata; convert reference "
                                                    "checkpoints with `dva convert-reference`")
    return CheckpointHeader(shapes, meta, data_bytes)


def checkpoint_metadata(path: Path, config_key: str) -> dict[str, str]:
    """The metadata of the dva checkpoint at local `path` (its header only; the tensors are not read)."""
    try:
        with open(path, "rb") as f:
            def read(start: int, end: int) -> bytes:
                f.seek(start)
                return f.read(end - start)

            return read_checkpoint_header(read, os.fstat(f.fileno()).st_size, str(path), config_key).metadata
    except OSError as err:
        raise MissingWeightsError(str(path), config_key, f"is not a readable safetensors file ({err})") from None


def read_checkpoint_file(path: Path, config_key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of the dva checkpoint at local `path`; a wrong or damaged file names itself and the
    config key."""
    meta = checkpoint_metadata(path, config_key)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise MissingWeightsError(str(path), config_key, f"is not a readable safetensors file ({err})") from None
    return state, meta


def checkpoint_state(path: Path, use_ema: bool, config_key: str) -> dict[str, torch.Tensor]:
    """The weights of the local checkpoint `path` under dva keys: a dva checkpoint, or a reference `.ckpt`'s EMA
    (or raw) half."""
    if path.suffix == ".ckpt":
        return reference_state_dict(path, use_ema=use_ema, config_key=config_key)
    return read_checkpoint_file(path, config_key)[0]


def describe_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                      prefixes: tuple[str, ...] = ("",)) -> str:
    """What keeps `state` (a file's) from loading into a model whose state is `expected` ('' when it fits): the
    first mismatch, then how many keys have a wrong shape, are missing, or are under `prefixes` but not in the model."""
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]  # in the model's order
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and k.startswith(prefixes)]
    if wrong:
        first = (f"`{wrong[0]}` is {list(state[wrong[0]].shape)} in the file, {list(expected[wrong[0]].shape)} in "
                 "the model")
    elif missing:
        first = f"`{missing[0]}` is missing from the file"
    elif unexpected:
        first = f"`{unexpected[0]}` is not in the model"
    else:
        return ""
    counts = ", ".join(f"{what}: {len(keys)}" for what, keys in (("wrong shapes", wrong), ("missing keys", missing),
                                                               ("unexpected keys", unexpected)) if keys)
    return f"{first} ({counts})"


def build_model(cfg: ModelConfig, state: Mapping[str, torch.Tensor], config_key: str = "model.checkpoint",
                with_unet: bool = True) -> DiffusionVideoAutoencoder:
    """The model of `cfg` with `state` (`checkpoint_state` of `cfg.checkpoint`; empty: random init) loaded, keys and
    shapes checked. `with_unet=False` builds and loads everything but the UNet.

    Reference frozen networks (ArcFace, landmarks, face parser) whose weights `state` holds are loaded from it, keys
    checked exactly; the others from their own weight files, which `cfg` names as local files.
    """
    parts = reference_parts(cfg, state, str(cfg.checkpoint), config_key) if state else {}
    model = DiffusionVideoAutoencoder(cfg, **parts, with_unet=with_unet)
    if cfg.checkpoint:
        expected = model.trainable_state_dict()
        prefixes = TRAINABLE_PREFIXES if with_unet else tuple(p for p in TRAINABLE_PREFIXES if p != "unet.")
        problem = describe_mismatch(expected, state, prefixes)
        if problem:
            raise MissingWeightsError(str(cfg.checkpoint), config_key,
                                      f"does not fit model config {cfg.name!r}: {problem}")
        model.load_state_dict({k: state[k] for k in expected}, strict=False)
    return model
