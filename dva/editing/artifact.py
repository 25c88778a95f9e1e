"""What every edit artefact shares: one safetensors file (local or s3://) and the identity encoder it belongs to.

An edit artefact (attribute classifier, direction) lives in z_id space, so it only means something for the identity
encoder it was made with. Each file records that encoder's id (`identity_encoder_id`) and refuses to apply to a
model whose encoder differs.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dva.errors import ConfigError, DvaError, StorageError
from dva.models.config import EncoderConfig, ModelConfig
from dva.storage import is_folder, local_path, open_file, sha256_of, write_bytes_atomic


def l2norm(z: torch.Tensor) -> torch.Tensor:
    """z / ‖z‖ over the last dimension."""
    return z / z.norm(dim=-1, keepdim=True)


def identity_encoder_id(source: Any, config_key: str = "model.identity_encoder") -> str:
    """`kind:dim:weights` for the identity encoder of a model, ModelConfig or EncoderConfig.

    `weights` is the configured SHA-256 or, failing that, the SHA-256 of the weight file (fetched through the cache
    for a URI); a folder of weights is named by its path; an encoder without weights (random, packaged) by "-".
    """
    cfg = getattr(source, "cfg", source)
    if isinstance(cfg, ModelConfig):
        cfg = cfg.identity_encoder
    if not isinstance(cfg, EncoderConfig):
        raise TypeError(f"expected a model, ModelConfig or EncoderConfig, got {type(source).__name__}")
    if cfg.sha256:
        weights = cfg.sha256.lower()
    elif not cfg.weights:
        weights = "-"
    elif _is_folder(cfg.weights):
        weights = "dir=" + cfg.weights
    else:
        weights = sha256_of(local_path(cfg.weights, config_key=f"{config_key}.weights"))
    return f"{cfg.kind}:{cfg.dim}:{weights}"


def _is_folder(uri: str) -> bool:
    try:
        return is_folder(uri)
    except StorageError:  # unreachable: let local_path report it with the config key
        return False


def check_encoder(made_with: str, model_encoder: str, what: str) -> None:
    """Refuse an artefact made in another identity encoder's z_id space."""
    if made_with != model_encoder:
        raise ConfigError(
            f"{what} was made with identity encoder {made_with!r} but the model uses {model_encoder!r}; "
            "make the edit file again with this model's identity encoder")


def check_dim(z: torch.Tensor, dim: int, what: str) -> None:
    if z.shape[-1] != dim:
        raise ConfigError(f"{what} works on {dim}-d z_id but got z_id of shape {tuple(z.shape)}")


def write_artifact(uri: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write one safetensors file to a local path or object-store URI (through `atomic_output`); return the URI."""
    data = save_safetensors({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()},
                            metadata=metadata)
    write_bytes_atomic(uri, data)
    return str(uri)


def read_artifact(uri: str | Path, fmt: str, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of an artefact file, checking its `format` metadata is `fmt`."""
    with open_file(uri, "rb") as f:
        data = f.read()
    try:
        tensors = load_safetensors(data)
        (n,) = struct.unpack("<Q", data[:8])  # the safetensors header: u64 length, then JSON
        metadata = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, struct.error) as err:
        raise DvaError(f"{what} {uri!s} is not a readable safetensors file ({err})") from None
    if metadata.get("format") != fmt:
        raise DvaError(f"{what} {uri!s} has format {metadata.get('format')!r}, expected {fmt!r}")
    return tensors, metadata


def digest(*parts: Any) -> str:
    """SHA-256 over strings, bytes and tensors, in order (for cache keys)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            t = p.detach().float().contiguous().cpu()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()
