"""Loading omegaconf YAML into typed dataclass schemas, with errors that name the bad key.

Every config in `configs/` has a dataclass schema. `load_config` merges, in order: the schema's defaults, the YAML
files, then `key=value` overrides, and validates the result before any work starts: every config block (a dataclass,
nested or not) may have `validate(self, key)`, which `validate_blocks` calls with the block's dotted config key ('' at
the top level, `face.track` inside a job's `face` block) so its errors name the full key (`nested_key`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dva.errors import ConfigError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


# omegaconf appends where the error happened (`full_key: ...`, `object_type=...`): our message names the key already.
_OMEGACONF_CONTEXT = re.compile(r"^\s+(full_key:|reference_type=|object_type=)")


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    msg = getattr(err, "msg", None) or str(err)
    msg = "\n".join(line for line in msg.splitlines() if not _OMEGACONF_CONTEXT.match(line)).strip()
    return f"config key `{key}`: {msg}" if key else msg


def resolve_config_path(name_or_path: str | Path, group: str | None = None) -> Path:
    """A YAML path as given, or `configs/<group>/<name>.yaml` for a bare preset name such as `tiny`."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        return p
    if group is None:
        raise ConfigError(f"{name_or_path!r} is not a .yaml path")
    candidate = CONFIG_DIR / group / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(x.stem for x in (CONFIG_DIR / group).glob("*.yaml"))
        raise ConfigError(f"no {group} preset named {name_or_path!r}; known presets: {', '.join(known)}")
    return candidate


def load_yaml(name_or_path: str | Path, group: str | None = None) -> DictConfig:
    """The YAML mapping of a preset or path (`resolve_config_path`); a file that is not one names itself and where."""
    path = resolve_config_path(name_or_path, group)
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"config file {str(path)!r}{where}: not valid YAML ({problem})") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"config file {str(path)!r}: {_describe(err)}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {str(path)!r}: holds a YAML list, not a mapping of config keys")
    return loaded


def nested_key(block: str, name: str) -> str:
    """The dotted config key of `name` inside the config block at key `block` ('' = the top level)."""
    return f"{block}.{name}" if block else name


def validate_blocks(obj: Any, key: str = "") -> None:
    """Call `validate(key)` of every config block in `obj` (a dataclass, or a list or dict holding them) with the
    block's dotted key: the blocks inside a block first, so a block's own checks across its children (e.g. crops
    that fit the model) see valid children, and each block is validated once."""
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            validate_blocks(item, f"{key}[{i}]")
    elif isinstance(obj, dict):
        for name, item in obj.items():
            validate_blocks(item, nested_key(key, str(name)))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            validate_blocks(getattr(obj, f.name), nested_key(key, f.name))
        if callable(getattr(obj, "validate", None)):
            obj.validate(key)


def merge_config(schema: type[T], sources: Sequence[Any] = (), overrides: Sequence[str] = ()) -> T:
    """Merge dict/DictConfig/YAML-path sources and `a.b=c` overrides onto `schema`; return a validated instance."""
    try:
        cfg = OmegaConf.structured(schema)
        for src in sources:
            if isinstance(src, (str, Path)):
                src = load_yaml(src)
            cfg = OmegaConf.merge(cfg, src)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
        for override in overrides:  # one by one, so a value YAML cannot read names its key
            try:
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([override]))
            except yaml.YAMLError as err:
                problem = getattr(err, "problem", None) or getattr(err, "reason", None) or type(err).__name__
                raise ConfigError(f"config key `{override.partition('=')[0]}`: the value is not valid YAML "
                                  f"({problem}); give it in a YAML file, or in a manifest for an input") from None
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err)) from None
    validate_blocks(obj)
    return obj


def load_config(schema: type[T], name_or_path: str | Path, overrides: Sequence[str] = (), group: str | None = None) -> T:
    """Load a preset (`configs/<group>/<name>.yaml`) or YAML path into `schema`, applying overrides."""
    return merge_config(schema, [load_yaml(name_or_path, group)], overrides)


def to_yaml(obj: Any) -> str:
    """Serialise a config dataclass back to YAML (stored next to checkpoints and outputs)."""
    if dataclasses.is_dataclass(obj):
        return OmegaConf.to_yaml(OmegaConf.structured(obj))
    return OmegaConf.to_yaml(obj)
