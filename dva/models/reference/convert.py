"""The checkpoint the reference authors released (a PyTorch Lightning `.ckpt`) → dva weights, with no retraining.

The Lightning file's `state_dict` holds the trained weights twice, `model.*` (raw) and `ema_model.*` (EMA, what the
reference's inference uses and our default); each half holds the UNet, the z_face linear (`encoder.linear`) and the
three frozen networks (`encoder.{idnet,lndnet,bgnet}.backbone`). `KEY_MAP` is the whole translation to dva keys;
our UNet already uses the reference names, so its keys only gain `unet.`.

The frozen networks are taken from the checkpoint when it holds them: the reference's EMA ran over them too, so they
may differ slightly from the separate files, and the checkpoint's copy is the one the released model ran with. The
separate files (`model_ir_se50.pth`, `mobilenet_224_model_best_gdconv_external.pth.tar`, `79999_iter.pth`) fill in
what a checkpoint lacks. Every key and shape is checked before anything is written.

The file is read with `torch.load(weights_only=True)`: no pickled code runs. The entries Lightning stores beside the
weights (callback states keyed by class, hyper-parameters, ...) may name classes that `weights_only` refuses; each
such name is read as `_Inert`, an object that runs no code and keeps nothing (Lightning's AttributeDict as a plain
dict), and only `state_dict` is used.
"""

from __future__ import annotations

import copy
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from dva.config import load_config, to_yaml
from dva.errors import ConfigError, MissingWeightsError
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.checkpoint import describe_mismatch, save_checkpoint
from dva.models.config import EncoderConfig, ModelConfig
from dva.models.reference import load_exact
from dva.models.reference.arcface import ArcFaceIdentityEncoder, build_identity_encoder
from dva.models.reference.bisenet import FaceParserMasker, build_face_parser
from dva.models.reference.landmarks import MobileNetLandmarkEncoder, build_landmark_encoder, official_to_module_state
from dva.storage import local_path

V = TypeVar("V")

EXPECTED_CKPT = (
    "a reference DVA PyTorch Lightning checkpoint (last.ckpt): a dict whose `state_dict` maps `ema_model.<key>` and "
    "`model.<key>` to tensors, <key> being a UNet key (`input_blocks.0.0.weight`, `time_embed.time_embed.0.weight`, "
    "...), `encoder.linear.*` or a frozen network's `encoder.{idnet,lndnet,bgnet}.backbone.*`"
)

HALVES = {True: "ema_model.", False: "model."}  # use_ema → prefix of that half of the Lightning state_dict

# Reference key prefix (inside one half) → dva key prefix. The landmark part also folds the MobileNetV2 that the
# reference registers twice into one copy (`official_to_module_state`).
LANDMARK_PREFIX = "landmark_encoder.backbone."
KEY_MAP: tuple[tuple[str, str], ...] = (
    ("encoder.linear.", "z_face."),
    ("encoder.idnet.backbone.", "identity_encoder.backbone."),
    ("encoder.lndnet.backbone.", LANDMARK_PREFIX),
    ("encoder.bgnet.backbone.", "face_parser.backbone."),
    ("time_embed.", "unet.time_embed."),
    ("input_blocks.", "unet.input_blocks."),
    ("middle_block.", "unet.middle_block."),
    ("output_blocks.", "unet.output_blocks."),
    ("out.", "unet.out."),
)

ROLES = ("identity_encoder", "landmark_encoder", "face_parser")  # ModelConfig fields and model attributes


@dataclass(frozen=True)
class ReferencePart:
    """A reference frozen network: its released file, and how to build it bare or loaded from that file."""

    file_name: str
    bare: Callable[[], nn.Module]
    from_file: Callable[[EncoderConfig, str], nn.Module]


PARTS: dict[str, ReferencePart] = {  # config `kind` → part
    "reference_arcface": ReferencePart(
        "model_ir_se50.pth", ArcFaceIdentityEncoder, lambda cfg, key: build_identity_encoder(cfg, key, "identity")),
    "reference_landmarks": ReferencePart(
        "mobilenet_224_model_best_gdconv_external.pth.tar", MobileNetLandmarkEncoder,
        lambda cfg, key: build_landmark_encoder(cfg, key, "landmark")),
    "reference_bisenet": ReferencePart("79999_iter.pth", FaceParserMasker, build_face_parser),
}


def map_reference_keys(half: Mapping[str, V]) -> tuple[dict[str, V], list[str]]:
    """One half of a reference `state_dict` (keys without `model.`/`ema_model.`) → dva keys, and the keys that no
    `KEY_MAP` entry covers. Values pass through untouched (tensors, or shapes when checking a listing)."""
    mapped: dict[str, V] = {}
    landmark: dict[str, V] = {}
    unknown: list[str] = []
    for key, value in half.items():
        rule = next(((src, dst) for src, dst in KEY_MAP if key.startswith(src)), None)
        if rule is None:
            unknown.append(key)
        elif rule[1] == LANDMARK_PREFIX:
            landmark[key.removeprefix(rule[0])] = value
        else:
            mapped[rule[1] + key.removeprefix(rule[0])] = value
    mapped.update({LANDMARK_PREFIX + k: v for k, v in official_to_module_state(landmark).items()})
    return mapped, sorted(unknown)


# Lightning's hyper-parameter dict types, read as plain dicts (`weights_only` fills only exact dicts with items).
DICT_TYPES = frozenset(f"{module}.AttributeDict" for module in (
    "pytorch_lightning.utilities.parsing", "lightning_fabric.utilities.data", "lightning.fabric.utilities.data"))


class _Inert:
    """Read in place of any class or function a checkpoint's non-weight entries name: runs nothing, keeps nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def read_lightning_state(path: Path, config_key: str) -> Mapping[str, Any]:
    """The `state_dict` entry of a Lightning checkpoint, read safely (memory-mapped when the file is a zip archive)."""
    try:
        archive = zipfile.is_zipfile(path)
        find = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
        names = find(str(path)) if archive and find is not None else []
        stand_ins = [(dict if name in DICT_TYPES else _Inert, name) for name in names]
        with torch.serialization.safe_globals(stand_ins):
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=archive)
    except Exception as err:  # not a torch file, truncated, or refused by weights_only: one clear error
        raise MissingWeightsError(str(path), config_key,
                                  f"cannot be read ({type(err).__name__}: {err}); expected {EXPECTED_CKPT}") from None
    state = content.get("state_dict") if isinstance(content, Mapping) else None
    if not isinstance(state, Mapping):
        raise MissingWeightsError(str(path), config_key, f"has no `state_dict` entry; expected {EXPECTED_CKPT}")
    return state


def reference_state_dict(uri: str, use_ema: bool = True, config_key: str = "model.checkpoint"
                         ) -> dict[str, torch.Tensor]:
    """The EMA (or raw) half of a reference Lightning checkpoint under dva keys, frozen networks included when the
    file holds them. Keys outside both halves are ignored; inside the chosen half every key must map."""
    try:
        path = local_path(uri, config_key=config_key)
    except MissingWeightsError as err:
        err.args = (f"{err.args[0]} Expected: {EXPECTED_CKPT}.",)
        raise
    prefix = HALVES[use_ema]
    half = {k.removeprefix(prefix): v for k, v in read_lightning_state(path, config_key).items()
            if isinstance(k, str) and k.startswith(prefix)}
    if not half:
        other = "--raw / `use_ema=false`" if use_ema else "the EMA weights (the default)"
        raise MissingWeightsError(uri, config_key, f"has no `{prefix}*` keys (try {other}); expected {EXPECTED_CKPT}")
    mapped, unknown = map_reference_keys(half)
    not_tensors = sorted(k for k, v in half.items() if not isinstance(v, torch.Tensor))
    if unknown or not_tensors:
        bad = unknown or not_tensors
        what = "keys outside the reference layout" if unknown else "entries that are not tensors"
        raise MissingWeightsError(uri, config_key, f"has {len(bad)} {what} under `{prefix}` "
                                  f"(e.g. {', '.join(bad[:3])}); expected {EXPECTED_CKPT}")
    return mapped


def _role_state(state: Mapping[str, torch.Tensor], role: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(f"{role}."): v for k, v in state.items() if k.startswith(f"{role}.")}


def _reference_roles(cfg: ModelConfig) -> dict[str, tuple[EncoderConfig, ReferencePart]]:
    """The configured frozen networks that are reference ones (the only ones a reference checkpoint can hold)."""
    roles = {role: getattr(cfg, role) for role in ROLES}
    return {role: (enc, PARTS[enc.kind]) for role, enc in roles.items() if enc is not None and enc.kind in PARTS}


def reference_parts(cfg: ModelConfig, state: Mapping[str, torch.Tensor], path: str, config_key: str
                    ) -> dict[str, nn.Module]:
    """The reference networks of `cfg` whose weights `state` holds, loaded from it (keys and shapes exactly), as
    `DiffusionVideoAutoencoder` keyword arguments. The others are left to the config (their weight files)."""
    parts = {}
    for role, (enc, part) in _reference_roles(cfg).items():
        own = _role_state(state, role)
        if own:
            parts[role] = part.bare()
            load_exact(parts[role], own, path=path, config_key=config_key,  # type: ignore[arg-type] # a URI too
                       expected=f"`{role}.backbone.*` weights of a {enc.kind!r} network")
    return parts


def meta_model(cfg: ModelConfig) -> DiffusionVideoAutoencoder:
    """`cfg`'s model on the meta device: every shape, no memory, no weight file read. Frozen networks other than
    reference ones are empty placeholders: a reference checkpoint holds no weights for them."""
    reference = _reference_roles(cfg)
    with torch.device("meta"):
        parts = {role: reference[role][1].bare() if role in reference else nn.Module()
                 for role in ROLES if getattr(cfg, role) is not None}
        return DiffusionVideoAutoencoder(cfg, **parts)


def convert(ckpt: str, out: str | Path, cfg: ModelConfig | None = None, *, encoders_dir: str | Path | None = None,
            use_ema: bool = True) -> tuple[Path, dict[str, str]]:
    """Write the dva checkpoint `out` (safetensors: weights plus config) and its config `out`.yaml from a reference
    Lightning checkpoint; return the path and where each frozen network came from.

    `cfg` (default `configs/model/reference256.yaml`) must describe the checkpoint's UNet. Each reference network it
    configures comes from the checkpoint, else from `encoders_dir`/<released file name>, else from its `weights`.
    The written config points at no weight files: everything the model needs is in `out`.
    """
    cfg = copy.deepcopy(cfg) if cfg is not None else load_config(ModelConfig, "reference256", group="model")
    if not _reference_roles(cfg):
        raise ConfigError(f"model config {cfg.name!r} has no reference encoders (kinds {sorted(PARTS)}); "
                          "use `--config reference256`")
    full = reference_state_dict(ckpt, use_ema=use_ema, config_key="--ckpt")
    state = {k: v for k, v in full.items() if not k.startswith(tuple(f"{r}." for r in ROLES))}
    sources = {}
    for role, (enc, part) in _reference_roles(cfg).items():
        own, sources[role] = _role_state(full, role), "checkpoint"
        if not own:
            if encoders_dir is not None:
                enc.weights, enc.sha256 = str(Path(encoders_dir) / part.file_name), None
            if not enc.weights:
                raise MissingWeightsError(ckpt, "--ckpt", f"holds no weights for `{role}` ({enc.kind}); pass "
                                          f"`--encoders DIR` with {part.file_name} in DIR, or set `{role}.weights`")
            own, sources[role] = part.from_file(enc, role).state_dict(), str(enc.weights)
        state.update({f"{role}.{k}": v for k, v in own.items()})
        enc.weights = enc.sha256 = None
    model = meta_model(cfg)
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise MissingWeightsError(ckpt, "--ckpt", f"does not fit model config {cfg.name!r} ({problem}); expected "
                                  f"{EXPECTED_CKPT}, with the UNet sizes of the config")
    cfg.checkpoint = None
    path = save_checkpoint(out, model, state, kind="ema" if use_ema else "raw")
    cfg.checkpoint = str(path.resolve())
    path.with_suffix(".yaml").write_text(to_yaml(cfg))
    return path, sources
