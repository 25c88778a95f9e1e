"""Python processes as the cluster image runs them: without the `[dlib]` extra (`cluster/Dockerfile`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

HIDDEN = ("dlib", "face_recognition_models")  # the `[dlib]` extra, which the cluster image does not install

SITECUSTOMIZE = textwrap.dedent(f"""\
    # Makes the [dlib] extra unimportable in every Python process started with this folder on PYTHONPATH.
    import sys

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HIDDEN!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (hidden: not in the cluster image)", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
""")


def without_dlib_folder(folder: Path) -> Path:
    """`folder` holding a sitecustomize.py that hides dlib: put it first on PYTHONPATH of the processes to run."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder
