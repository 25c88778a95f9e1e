"""Loading omegaconf YAML into typed dataclass schemas, with errors that name the bad key.

Every config in `configs/` has a dataclass schema. `load_config` merges, in order: the schema's defaults, the YAML
files, then `key=value` overrides, and validates the result before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import OmegaConf
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


def merge_config(schema: type[T], sources: Sequence[Any] = (), overrides: Sequence[str] = ()) -> T:
    """Merge dict/DictConfig/YAML-path sources and `a.b=c` overrides onto `schema`; return a validated instance."""
    try:
        cfg = OmegaConf.structured(schema)
        for src in sources:
            if isinstance(src, (str, Path)):
                src = OmegaConf.load(src)
            cfg = OmegaConf.merge(cfg, src)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err)) from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def load_config(schema: type[T], name_or_path: str | Path, overrides: Sequence[str] = (), group: str | None = None) -> T:
    """Load a preset (`configs/<group>/<name>.yaml`) or YAML path into `schema`, applying overrides."""
    return merge_config(schema, [resolve_config_path(name_or_path, group)], overrides)


def to_yaml(obj: Any) -> str:
    """Serialise a config dataclass back to YAML (stored next to checkpoints and outputs)."""
    if dataclasses.is_dataclass(obj):
        return OmegaConf.to_yaml(OmegaConf.structured(obj))
    return OmegaConf.to_yaml(obj)
