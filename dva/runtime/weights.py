"""Weight resolution: the weight URIs of a model config (local paths or s3://) → local files, and models loaded.

`dva.models` reads local files and state dicts only; this module is where a job's configured URIs become local
files (`dva.storage.local_path`: fetched once into the cache, checked against a configured SHA-256) and where dva
checkpoints are read, checked and written (atomically, `dva.storage.atomic_output`). Errors name the configured URI
and its config key, never a cache file.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from dva.config import merge_config
from dva.errors import MissingWeightsError
from dva.models.autoencoder import TRAINABLE_PREFIXES, DiffusionVideoAutoencoder
from dva.models.checkpoint import (CheckpointHeader, build_model, checkpoint_metadata, checkpoint_state,
                                   describe_mismatch, read_checkpoint_file, read_checkpoint_header, write_checkpoint)
from dva.models.config import EncoderConfig, ModelConfig
from dva.models.dlib_encoders import MODEL_FILES as DLIB_MODEL_FILES
from dva.models.reference.convert import (EXPECTED_CKPT, ROLES, held_roles, meta_model, reference_parts,
                                          reference_state_dict)
from dva.storage import (NotFetched, atomic_output, cache_dir, is_remote, join, local_path, no_remote_fetch,
                         read_range, size)


def local_checkpoint(uri: str, config_key: str = "model.checkpoint") -> Path:
    """The local file of the checkpoint `uri` (fetched when remote); a missing reference `.ckpt` says what it is."""
    try:
        return local_path(uri, config_key=config_key)
    except MissingWeightsError as err:
        if str(uri).endswith(".ckpt"):
            err.args = (f"{err.args[0]} Expected: {EXPECTED_CKPT}.",)
        raise


def _local_folder(folder: str, names: Iterable[str], config_key: str) -> Path:
    """A local folder holding the files `names` of the remote folder `folder` (each fetched into the cache once)."""
    files = {name: local_path(join(folder, name), config_key=config_key) for name in names}
    local = cache_dir() / "weights" / hashlib.sha256("\n".join(map(str, files.values())).encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        with contextlib.suppress(FileExistsError):  # another worker linked it first
            (local / name).symlink_to(path)
    return local


def resolve_encoder(cfg: EncoderConfig | None, config_key: str) -> EncoderConfig | None:
    """`cfg` with `weights` a local file: a URI is fetched (and checked against `sha256`), a local file with a
    `sha256` is checked. A plain local path stays as it is: the encoder's loader checks it and names the file it
    expects. A dlib kind's `weights` is a folder: a remote one is fetched into a local one."""
    if cfg is None or not cfg.weights:
        return cfg
    key = f"{config_key}.weights"
    if cfg.kind in DLIB_MODEL_FILES:
        local = _local_folder(cfg.weights, DLIB_MODEL_FILES[cfg.kind], key) if is_remote(cfg.weights) else cfg.weights
    elif "://" in cfg.weights or cfg.sha256:
        local = local_path(cfg.weights, config_key=key, sha256=cfg.sha256)
    else:
        local = cfg.weights
    resolved = copy.copy(cfg)
    resolved.weights = str(local)
    return resolved


def resolve_model_weights(cfg: ModelConfig, config_key: str = "model.checkpoint",
                          held: Iterable[str] = ()) -> ModelConfig:
    """A copy of `cfg` whose weight files are local: the checkpoint, and the weights of every frozen network but
    those in `held` (networks whose weights the checkpoint holds). Frozen networks are keyed by role, as the model
    builds them (`identity_encoder.weights`, ...)."""
    resolved = copy.deepcopy(cfg)
    if cfg.checkpoint:
        resolved.checkpoint = str(local_checkpoint(cfg.checkpoint, config_key))
    for role in set(ROLES) - set(held):
        setattr(resolved, role, resolve_encoder(getattr(cfg, role), role))
    return resolved


@contextlib.contextmanager
def _named_as(uris: Mapping[str, str]) -> Iterator[None]:
    """A MissingWeightsError raised inside names the configured URI, not its local file ({local file: URI})."""
    try:
        yield
    except MissingWeightsError as err:
        for local, uri in uris.items():
            if local != uri and local in err.args[0]:
                err.args = (err.args[0].replace(local, uri),)
                err.path = uri if err.path == local else err.path
        raise


def _configured_uris(cfg: ModelConfig, resolved: ModelConfig) -> dict[str, str]:
    """{local file of `resolved`: URI of `cfg`} for every weight file the two configs name."""
    local = resolved.weight_files()
    return {local[key]: uri for key, uri in cfg.weight_files().items() if key in local}


def load_model(cfg: ModelConfig, device: str | torch.device = "cpu", config_key: str = "model.checkpoint",
               with_unet: bool = True) -> DiffusionVideoAutoencoder:
    """Build the model of `cfg` in eval mode on `device`, with the checkpoint's weights when one is configured.
    `with_unet=False` builds and loads everything but the UNet (stage A and preprocessing only encode).

    Reference frozen networks (ArcFace, landmarks, face parser) whose weights the checkpoint holds are loaded from it,
    keys checked exactly, and their own weight files are neither fetched nor read.
    """
    state: dict[str, torch.Tensor] = {}
    if cfg.checkpoint:
        path = local_checkpoint(cfg.checkpoint, config_key)
        with _named_as({str(path): str(cfg.checkpoint)}):
            state = checkpoint_state(path, cfg.use_ema, config_key)
    resolved = resolve_model_weights(cfg, config_key, held=held_roles(cfg, state))
    with _named_as(_configured_uris(cfg, resolved)):
        return build_model(resolved, state, config_key, with_unet).to(device).eval()


def read_reference_checkpoint(uri: str, use_ema: bool = True, config_key: str = "model.checkpoint"
                              ) -> dict[str, torch.Tensor]:
    """The EMA (or raw) half of the reference Lightning checkpoint `uri` under dva keys (`reference_state_dict`)."""
    path = local_checkpoint(uri, config_key)
    with _named_as({str(path): str(uri)}):
        return reference_state_dict(path, use_ema, config_key)


def checkpoint_header(uri: str, config_key: str = "model.checkpoint") -> CheckpointHeader:
    """The header of the dva checkpoint `uri`, local or remote, by two ranged reads (its 8-byte length, then its
    JSON): nothing else of the file is read or fetched. Judged as `checkpoint_metadata` judges a local file."""
    return read_checkpoint_header(lambda start, end: read_range(uri, start, end), size(uri), str(uri), config_key)


@dataclass
class CheckpointFit:
    """What `checkpoint_fit` read of a checkpoint that fits its model config."""

    tensors: int  # trained tensors, each present with the model's shape
    held: list[str]  # reference frozen networks whose weights the file holds (their own files are not read)
    data_bytes: Optional[int]  # a dva checkpoint's tensor bytes, which were not read; None: a reference .ckpt


def checkpoint_fit(cfg: ModelConfig, config_key: str = "model.checkpoint", with_unet: bool = True) -> CheckpointFit:
    """What `load_model` checks of `cfg.checkpoint`, without reading its tensors: MissingWeightsError naming the
    file, the config key and the first mismatch when it does not fit the model `cfg` builds.

    A dva checkpoint (safetensors, dva256 ≈ 760 MB) is judged by its header: the `format` metadata, every key and
    shape (compared with the model built on the meta device) and the data length the header declares against the
    file's size, which catches a truncated upload. That is everything `load_model` rejects a file for except corrupt
    tensor bytes, for a few kB read (a ranged read on S3, nothing downloaded). A reference Lightning `.ckpt` is read
    memory-mapped by the job's own reader (its pickle read safely, no tensor data touched); a remote one not in the
    cache raises NotFetched (reading it means fetching it).
    """
    uri = str(cfg.checkpoint)
    if uri.endswith(".ckpt"):
        with no_remote_fetch():
            shapes = {k: tuple(v.shape) for k, v in read_reference_checkpoint(uri, cfg.use_ema, config_key).items()}
        made_for, data_bytes = None, None
    else:
        header = checkpoint_header(uri, config_key)
        shapes, data_bytes = header.shapes, header.data_bytes
        made_for = OmegaConf.create(header.metadata.get("config") or "{}").get("name")
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    expected = {k: v for k, v in meta_model(cfg).trainable_state_dict().items()
                if with_unet or not k.startswith("unet.")}
    prefixes = TRAINABLE_PREFIXES if with_unet else tuple(p for p in TRAINABLE_PREFIXES if p != "unet.")
    problem = describe_mismatch(expected, state, prefixes)
    if problem:
        made = f" (the file was made for model config {made_for!r})" if made_for and made_for != cfg.name else ""
        raise MissingWeightsError(uri, config_key, f"does not fit model config {cfg.name!r}{made}: {problem}")
    with torch.device("meta"):
        held = list(reference_parts(cfg, state, uri, config_key))
    return CheckpointFit(len(expected), held, data_bytes)


def check_checkpoint(cfg: ModelConfig, config_key: str = "model.checkpoint", with_unet: bool = True) -> None:
    """`checkpoint_fit` of a job's checkpoint, on the driver before workers start, so a wrong, damaged, unsafe or
    ill-fitting file is one error instead of a failure in every worker. No checkpoint: nothing to check; a remote
    reference `.ckpt` is left to the workers' `load_model` (checking it means fetching it)."""
    if cfg.checkpoint:
        with contextlib.suppress(NotFetched):
            checkpoint_fit(cfg, config_key, with_unet)


def read_checkpoint(uri: str, config_key: str = "model.checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of the dva checkpoint `uri`; a wrong or damaged file names itself and the config key."""
    path = local_checkpoint(uri, config_key)
    with _named_as({str(path): str(uri)}):
        return read_checkpoint_file(path, config_key)


def checkpoint_config(uri: str, config_key: str = "model.checkpoint") -> ModelConfig:
    """The ModelConfig stored inside the dva checkpoint `uri`."""
    path = local_checkpoint(uri, config_key)
    with _named_as({str(path): str(uri)}):
        meta = checkpoint_metadata(path, config_key)
    return merge_config(ModelConfig, [OmegaConf.create(meta["config"])])


def save_checkpoint(uri: str | Path, model: DiffusionVideoAutoencoder,
                    weights: Mapping[str, torch.Tensor] | None = None, *, kind: str = "ema") -> str | Path:
    """Write `weights` (default: the model's trainable state) and the model config to `uri` atomically; return `uri`."""
    with atomic_output(uri, suffix=".safetensors") as tmp:
        write_checkpoint(tmp, model, weights, kind=kind)
    return uri
