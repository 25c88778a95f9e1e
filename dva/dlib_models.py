"""Where dlib and the model files of `face_recognition_models` come from: the optional `[dlib]` extra.

This module imports neither package, so every front end and encoder imports without them (the cluster image has no
dlib). The dlib back end, the dlib encoders and the dlib-based options of other back ends call `import_dlib` when
they are built; a missing package then fails at once with the config key that chose dlib and the install command.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from dva.errors import ConfigError, MissingWeightsError

INSTALL = "pip install 'dva[dlib]'"


def import_dlib(config_key: str, choice: str) -> ModuleType:
    """The dlib module; ConfigError naming `config_key` (which chose `choice`) and the extra when it is missing."""
    try:
        import dlib
    except ImportError:
        raise ConfigError(f"config key `{config_key}`: {choice} needs dlib, which is not installed; install the "
                          f"[dlib] extra ({INSTALL}) or configure a back end without dlib") from None
    return dlib


def packaged_folder(config_key: str) -> Path:
    """The `models/` folder of the installed face_recognition_models package (whose import fails on current
    setuptools, so it is found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError("<face_recognition_models>/models", config_key,
                                  f"the face_recognition_models package is not installed ({INSTALL})")
    return Path(spec.submodule_search_locations[0]) / "models"


def packaged_model(file_name: str, config_key: str) -> Path:
    """One model file of face_recognition_models, checked to exist."""
    path = packaged_folder(config_key) / file_name
    if not path.is_file():
        raise MissingWeightsError(str(path), config_key)
    return path
