"""Paths and object-store URIs through one interface (fsspec): local folders and s3:// behave the same.

Weight files named in config are resolved with `local_path`: a local path is checked and returned; a remote URI is
fetched once into a local cache (keyed by URI, optionally checked against a SHA-256) and the cached path returned.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import fsspec

from dva.errors import MissingWeightsError, StorageError

CACHE_ENV = "DVA_CACHE_DIR"


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "dva")
    return Path(root)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def local_path(uri: str | Path | None, *, config_key: str, sha256: str | None = None) -> Path:
    """Return a local file for `uri`, downloading a remote object once into the cache.

    Raises MissingWeightsError naming `uri` and `config_key` when the file is absent, unreachable or fails its checksum.
    """
    if uri is None or str(uri) == "":
        raise MissingWeightsError("<unset>", config_key, "no file configured")
    uri = str(uri)
    if not is_remote(uri):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise MissingWeightsError(uri, config_key)
        if sha256 and sha256_of(path) != sha256.lower():
            raise MissingWeightsError(uri, config_key, f"SHA-256 differs from the configured {sha256}")
        return path
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache_dir() / "weights" / key / Path(uri.rstrip("/")).name
    if target.is_file() and (not sha256 or sha256_of(target) == sha256.lower()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fs, remote = fsspec.core.url_to_fs(uri)
        if not fs.exists(remote):
            raise MissingWeightsError(uri, config_key)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        os.close(fd)
        fs.get_file(remote, tmp)
    except MissingWeightsError:
        raise
    except Exception as err:  # network, credentials, bucket: all surface as one clear error
        raise MissingWeightsError(uri, config_key, f"cannot be fetched ({type(err).__name__}: {err})") from None
    if sha256 and sha256_of(tmp) != sha256.lower():
        os.unlink(tmp)
        raise MissingWeightsError(uri, config_key, f"SHA-256 differs from the configured {sha256}")
    shutil.move(tmp, target)
    return target


def open_file(uri: str | Path, mode: str = "rb"):
    """Open a local path or remote URI (fsspec), raising StorageError with the URI when it cannot be reached."""
    try:
        return fsspec.open(str(uri), mode).open()
    except FileNotFoundError:
        raise StorageError(f"{uri!s} does not exist") from None
    except Exception as err:
        raise StorageError(f"cannot open {uri!s}: {type(err).__name__}: {err}") from None
