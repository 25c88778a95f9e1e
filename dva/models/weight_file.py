"""The one check every model loader makes of a configured weight file: it is a local file.

Models read local files only; a URI (s3://, file://, ...) is resolved to a local file by `dva.runtime.weights`
before a model is built, as `load_model` does.
"""

from __future__ import annotations

from pathlib import Path

from dva.errors import MissingWeightsError


def local_weight_file(path: str | Path | None, config_key: str) -> Path:
    """`path` as a Path when it names an existing local file; else MissingWeightsError naming `config_key`."""
    if path is None or str(path) == "":
        raise MissingWeightsError("<unset>", config_key, "no file configured")
    if "://" in str(path):
        raise MissingWeightsError(str(path), config_key, "is a URI, and models read local files only: resolve it "
                                  "with `dva.runtime.weights` first (as `load_model` does)")
    local = Path(path).expanduser()
    if not local.is_file():
        raise MissingWeightsError(str(path), config_key)
    return local
