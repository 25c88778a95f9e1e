"""dva checkpoints: one safetensors file holding the trainable weights (EMA by default) and the model config.

`load_model` builds a model from a `ModelConfig` and, when `checkpoint` is set, loads it from a local path or s3://
URI. A reference Lightning `.ckpt` is converted on the fly (see `dva.models.reference.convert`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dva.config import merge_config, to_yaml
from dva.errors import MissingWeightsError
from dva.models.autoencoder import TRAINABLE_PREFIXES, DiffusionVideoAutoencoder
from dva.models.config import ModelConfig
from dva.storage import is_remote, local_path

FORMAT = "dva-checkpoint-v1"


def save_checkpoint(path: str | Path, model: DiffusionVideoAutoencoder,
                    weights: dict[str, torch.Tensor] | None = None, *, kind: str = "ema") -> Path:
    """Write `weights` (default: the model's trainable state) and the model config to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in (weights or model.trainable_state_dict()).items()}
    tmp = path.with_name(f".{path.name}.partial")
    save_file(state, str(tmp), metadata={"format": FORMAT, "weights": kind, "config": to_yaml(model.cfg)})
    tmp.replace(path)
    return path


def _checked_metadata(path: Path, uri: str, config_key: str) -> dict[str, str]:
    """The metadata of the dva checkpoint at local `path` (its header only; the tensors are not read)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise MissingWeightsError(uri, config_key, f"is not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise MissingWeightsError(
            uri, config_key, f"lacks the `format: {FORMAT}` metadata; convert reference checkpoints with "
            "`dva convert-reference`")
    return meta


def check_checkpoint(uri: str, config_key: str = "model.checkpoint") -> None:
    """Cheap check of a local checkpoint before workers start, so a wrong, damaged or unsafe file fails once, on the
    driver, instead of in every worker: a dva checkpoint's header, or a reference `.ckpt` memory-mapped (its pickle
    read safely, its tensors not read). Remote files are left to `load_model`: checking them means fetching them."""
    if is_remote(str(uri)):
        return
    path = local_path(uri, config_key=config_key)
    if path.suffix == ".ckpt":
        from dva.models.reference.convert import read_lightning_state

        read_lightning_state(path, config_key)
    else:
        _checked_metadata(path, uri, config_key)


def read_checkpoint(uri: str, config_key: str = "model.checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a dva checkpoint; a wrong or damaged file names itself and the config key."""
    path = local_path(uri, config_key=config_key)
    meta = _checked_metadata(path, uri, config_key)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise MissingWeightsError(uri, config_key, f"is not a readable safetensors file ({err})") from None
    return state, meta


def checkpoint_config(uri: str, config_key: str = "model.checkpoint") -> ModelConfig:
    """The ModelConfig stored inside a dva checkpoint."""
    _, meta = read_checkpoint(uri, config_key)
    return merge_config(ModelConfig, [OmegaConf.create(meta["config"])])


def describe_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                      prefixes: tuple[str, ...] = ("",)) -> str:
    """What keeps `state` from loading into a model whose state is `expected` ('' when it fits): missing keys, keys
    under `prefixes` the model lacks, and wrong shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if k.startswith(prefixes))
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    return "; ".join(f"{what}: {keys[:3]}{'…' if len(keys) > 3 else ''} ({len(keys)})"
                     for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                        ("wrong shapes", wrong)) if keys)


def load_model(cfg: ModelConfig, device: str | torch.device = "cpu", config_key: str = "model.checkpoint",
               with_unet: bool = True) -> DiffusionVideoAutoencoder:
    """Build the model of `cfg` in eval mode on `device`, with the checkpoint's weights when one is configured.
    `with_unet=False` builds and loads everything but the UNet (stage A and preprocessing only encode).

    Reference frozen networks (ArcFace, landmarks, face parser) whose weights the checkpoint holds are loaded from it,
    keys checked exactly, instead of from their own weight files.
    """
    state: dict[str, torch.Tensor] = {}
    if cfg.checkpoint:
        if str(cfg.checkpoint).endswith(".ckpt"):
            from dva.models.reference.convert import reference_state_dict

            state = reference_state_dict(cfg.checkpoint, use_ema=cfg.use_ema, config_key=config_key)
        else:
            state, _ = read_checkpoint(cfg.checkpoint, config_key)
    parts = {}
    if state:
        from dva.models.reference.convert import reference_parts

        parts = reference_parts(cfg, state, str(cfg.checkpoint), config_key)
    model = DiffusionVideoAutoencoder(cfg, **parts, with_unet=with_unet)
    if cfg.checkpoint:
        expected = model.trainable_state_dict()
        prefixes = TRAINABLE_PREFIXES if with_unet else tuple(p for p in TRAINABLE_PREFIXES if p != "unet.")
        problem = describe_mismatch(expected, state, prefixes)
        if problem:
            raise MissingWeightsError(str(cfg.checkpoint), config_key,
                                      f"does not fit model config {cfg.name!r}: {problem}")
        model.load_state_dict({k: state[k] for k in expected}, strict=False)
    return model.to(device).eval()
