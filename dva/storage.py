"""Paths and object-store URIs through one interface (fsspec): local folders and s3:// behave the same.

Weight files named in config are resolved with `local_path`: a local path is checked and returned; a remote URI is
fetched once into a local cache (keyed by URI, optionally checked against a SHA-256) and the cached path returned.

The package reads and writes only through this module (`list_files`, `exists`, `size`, `is_folder`, `open_file`,
`read_range`, `read_many`, `atomic_output`): every output appears at its final key whole or not at all
(`atomic_output`: a local file is renamed over it from `<folder>/.partial/<uuid>`, an object is uploaded in one PUT
or multipart upload), and listings skip hidden names, `.partial/` included, and `.`/`..` segments (`scan_files`
says which). `output_key` turns an input's path into a key that cannot leave the output prefix; `redact` strips
credentials from anything logged or recorded, and `shown` is what is printed: redacted, with control and
bidirectional characters escaped. Failures surface as one StorageError that names the location (credentials
removed) and what to check.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import posixpath
import re
import tempfile
import time
import unicodedata
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import fsspec

from dva.errors import MissingWeightsError, StorageError

CACHE_ENV = "DVA_CACHE_DIR"
PARTIAL_DIR = ".partial"

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@?#]+@")  # as URI parsers read it: no `/` in it
# What a user may have meant as user-info, for redaction: up to the last `@` of the URI (a secret may hold `/`, `:`
# and `@`), when that part has a `:` or no `/`, `?`, `#` (`s3://bucket/me@home.mp4` has none)
_LOOSE_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)(\S*)@")
_USERINFO_SEPARATORS = re.compile(r"[/:@]")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:x-amz-[a-z\-]+|signature|awsaccesskeyid|sig|token|access_token|security[-_]token|credential"
    r"|password|secret|api_?key)=)"
    # the value: URL-safe characters only (dots inside, as in JWTs), so the `)`, `,`, `;` or `.` after it stays
    r"[\w%~+/=\-]+(?:\.[\w%~+/=\-]+)*"
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_SECRET_ENV_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|API_KEY|PRIVATE_KEY", re.I)
_MIN_SECRET_LEN = 8  # shorter values ("1", "true") are not secrets, and replacing them would garble messages
_MAX_PART_BYTES = 200  # under the usual 255-byte file-name limit, leaving room for the disambiguating hash
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}  # controls, invisible formatting, bad bytes, line breaks
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


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


class NotFetched(Exception):
    """Raised by `local_path` inside `no_remote_fetch()` for a remote file that exists but is not in the cache."""

    def __init__(self, uri: str, config_key: str, size: int | None):
        self.uri, self.config_key, self.size = uri, config_key, size
        super().__init__(f"{redact(uri)} (config key `{config_key}`) exists but is not fetched")

    def __reduce__(self):  # pickled by its arguments: the default would call __init__ with the message alone
        return NotFetched, (self.uri, self.config_key, self.size)


_FETCH_ALLOWED = contextvars.ContextVar("dva_fetch_allowed", default=True)


@contextlib.contextmanager
def no_remote_fetch() -> Iterator[None]:
    """Within the block `local_path` downloads nothing: a remote file that is not cached raises NotFetched (after
    its existence is checked), so loaders can be tried for free (`dva check`)."""
    token = _FETCH_ALLOWED.set(False)
    try:
        yield
    finally:
        _FETCH_ALLOWED.reset(token)


def file_stamp(uri: str | Path) -> str:
    """What changes when the file (or object) at `uri` is replaced: its size and ETag (object stores) or
    modification time (file systems), as a short string."""
    fs, path = _fs(uri)
    with _reporting(uri, "check"):
        fs.invalidate_cache(path)
        info = fs.info(path)
    tag = info.get("ETag") or info.get("etag") or _modified(info)
    return f"{info.get('size')}-{str(tag).strip(chr(34))}"


_DIGESTS: dict[tuple[str, str], str] = {}


def content_digest(uri: str | Path) -> str:
    """An id of the bytes at `uri` (of every file's name and bytes, for a folder): SHA-256, computed once per process
    for each (location, `file_stamp`), so a file replaced at the same location gets a new digest and an unchanged one
    is not read again. An object store's object is identified by its size and ETag instead, which its server derives
    from the bytes: the driver of a job never downloads a checkpoint only to hash it."""
    if is_folder(uri):
        files = list_files(uri)
        parts = [f"{f[len(str(uri).rstrip('/')):]}={content_digest(f)}" for f in files]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    fs, path = _fs(uri)
    with _reporting(uri, "check"):
        info = fs.info(path)
    etag = (info.get("ETag") or info.get("etag")) if is_remote(str(uri)) else None
    if etag:
        return f"etag:{info.get('size')}-{str(etag).strip(chr(34))}"
    key = (canonical_uri(uri), file_stamp(uri))
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open_file(uri) as f:
            while block := f.read(1 << 20):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def local_path(uri: str | Path | None, *, config_key: str, sha256: str | None = None) -> Path:
    """Return a local file for `uri`, downloading a remote object once into the cache per version of the object
    (keyed by its location and `file_stamp`: an object replaced at the same URI is fetched again; see also
    `no_remote_fetch`).

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
    try:
        stamp = file_stamp(uri)
    except StorageError:  # absent or unreachable: the fetch below says which
        stamp = ""
    key = hashlib.sha256(f"{uri}\n{stamp}".encode()).hexdigest()[:16]
    target = cache_dir() / "weights" / key / Path(uri.rstrip("/")).name
    if target.is_file() and (not sha256 or sha256_of(target) == sha256.lower()):
        return target
    try:
        fs, remote = fsspec.core.url_to_fs(uri)
        if not fs.exists(remote):
            raise MissingWeightsError(uri, config_key)
        if not _FETCH_ALLOWED.get():
            raise NotFetched(uri, config_key, fs.size(remote))
        with atomic_output(target) as tmp:
            fs.get_file(remote, str(tmp))
            if sha256 and sha256_of(tmp) != sha256.lower():
                raise MissingWeightsError(uri, config_key, f"SHA-256 differs from the configured {sha256}")
    except (MissingWeightsError, NotFetched):
        raise
    except Exception as err:  # network, credentials, bucket: all surface as one clear error
        raise MissingWeightsError(uri, config_key, f"cannot be fetched ({type(err).__name__}: "
                                                   f"{redact(err, [str(uri)])})") from None
    return target


def check_weight_files(files: dict[str, str]) -> None:
    """Raise MissingWeightsError for the first of {config key: URI} whose file (or folder) does not exist: a job
    calls it before it starts workers, so a wrong path is one clear error instead of a failure in every worker."""
    for config_key, uri in files.items():
        if not exists(uri):
            raise MissingWeightsError(redact(uri), config_key)


# --- errors and credentials -----------------------------------------------------------------------------------


def redact(text, uris: Iterable[str] = ()) -> str:
    """`text` with credentials removed: URI user-info (`s3://key:secret@bucket`, also with `/`, `:` or `@` in the
    secret: everything up to the URI's last `@`), signed-URL query values (Signature, X-Amz-*, token, ...), AWS
    access key ids, and the values of secret-looking environment variables (names containing SECRET, TOKEN,
    PASSWORD, CREDENTIAL, ACCESS_KEY, API_KEY, PRIVATE_KEY).
    Also the user-info of every `scheme://user:password@` in `uris`, and its pieces, percent-decoded too, wherever
    `text` repeats them without the scheme (a library may quote `key:secret@bucket`, or the part before a `/` in
    the secret as a bucket name, as botocore's `Invalid bucket name` does)."""
    text = str(text)
    secrets = {v for k, v in os.environ.items() if _SECRET_ENV_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    secrets |= {s for uri in uris for s in _userinfo(uri)}
    for value in sorted(secrets, key=len, reverse=True):  # longest first: no secret is left half-replaced
        text = text.replace(value, "***")
    text = _LOOSE_USERINFO.sub(lambda m: f"{m.group(1)}***@" if _is_userinfo(m.group(2)) else m.group(0), text)
    text = _SECRET_PARAM.sub(r"\1***", text)
    return _AWS_KEY_ID.sub("***", text)


def shown(text, uris: Iterable[str] = ()) -> str:
    """`text` as dva prints it, in one line: `redact`ed, and every control, invisible-format, bidirectional,
    line-break and undecodable character escaped (`\\x1b`, `\\r`, `\\n`, `\\u202e`, `\\udcff`), so a file
    name cannot rewrite or fake a line on a terminal. Print several lines one by one through it."""
    return "".join(_escaped(ch) for ch in redact(text, uris))


def _escaped(ch: str) -> str:
    if unicodedata.category(ch) not in _DROPPED_CATEGORIES:
        return ch
    code = ord(ch)
    return _NAMED_ESCAPES.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                                       else f"\\U{code:08x}")


def _is_userinfo(part: str) -> bool:
    return ":" in part or not re.search(r"[/?#]", part)


def _userinfo(text: str) -> list[str]:
    """The `user:password` of every `scheme://user:password@` in `text`, percent-decoded too, and every run of its
    pieces between `/`, `:` and `@` (the user, the password, what a parser takes for a host or a key)."""
    found = []
    for match in _LOOSE_USERINFO.finditer(str(text)):
        if not _is_userinfo(match.group(2)):
            continue
        for info in {match.group(2), urllib.parse.unquote(match.group(2))}:
            cuts = [0, *(m.start() for m in _USERINFO_SEPARATORS.finditer(info)), len(info)]
            found += [info[a + (a > 0):b] for i, a in enumerate(cuts) for b in cuts[i + 1:]]
    return [s for s in found if len(s) >= 4]  # shorter ones would garble the message more than they hide


@contextlib.contextmanager
def _reporting(uri, action: str) -> Iterator[None]:
    """Turn any failure of the block into a StorageError naming `uri` (redacted) and what to check.

    The original exception is not chained: botocore messages and tracebacks can carry endpoint secrets."""
    where = redact(uri)
    if is_remote(str(uri)):
        hint = "check the bucket name, the credentials (AWS_* variables or instance role) and AWS_ENDPOINT_URL"
    else:
        hint = "check the path and its permissions"
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as err:
        detail = redact(err.strerror or err, [str(uri)])
        raise StorageError(f"cannot {action} {where}: it does not exist ({detail}); {hint}") from None
    except PermissionError:
        raise StorageError(f"cannot {action} {where}: access denied; {hint}") from None
    except Exception as err:  # botocore, aiohttp and OS errors: all surface as one clear error
        raise StorageError(f"cannot {action} {where}: {type(err).__name__}: {redact(err, [str(uri)])}; {hint}") from None


def _fs(uri) -> tuple[fsspec.AbstractFileSystem, str]:
    with _reporting(uri, "resolve"):
        return fsspec.core.url_to_fs(str(uri))


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in fs.protocol


def _to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if _is_local(fs) else fs.unstrip_protocol(path)


# --- reading and listing -----------------------------------------------------------------------------------------


def open_file(uri: str | Path, mode: str = "rb"):
    """Open a local path or remote URI (fsspec), raising StorageError with the URI when it cannot be reached."""
    with _reporting(uri, "open"):
        return fsspec.open(str(uri), mode).open()


def join(prefix: str | Path, *parts: str) -> str:
    """`prefix/part/...` with single slashes, for local paths and URIs alike.

    Parts are used as given: build them from untrusted names with `output_key`."""
    out = str(prefix).rstrip("/")
    for part in parts:
        if part := str(part).strip("/"):
            out = f"{out}/{part}"
    return out


def exists(uri: str | Path) -> bool:
    """Whether a file, folder or object prefix exists at `uri`. A missing bucket counts as missing."""
    fs, path = _fs(uri)
    with _reporting(uri, "check"):
        fs.invalidate_cache(path)  # other workers may have written since this process last listed
        return fs.exists(path)


def is_folder(uri: str | Path) -> bool:
    """Whether `uri` is a folder (on an object store: a prefix with keys below it)."""
    fs, path = _fs(uri)
    with _reporting(uri, "check"):
        fs.invalidate_cache(path)
        return fs.isdir(path)


def size(uri: str | Path) -> int:
    """Bytes of the file or object at `uri` (StorageError when it is absent or unreachable)."""
    fs, path = _fs(uri)
    with _reporting(uri, "check"):
        return int(fs.size(path))


def read_range(uri: str | Path, start: int, end: int) -> bytes:
    """Bytes `start`…`end` (exclusive) of the file or object at `uri`: one ranged GET on an object store, nothing
    else of it fetched."""
    fs, path = _fs(uri)
    with _reporting(uri, "read"):
        return fs.cat_file(path, start=start, end=end)


def list_files(prefix: str | Path, suffixes: Iterable[str] | None = None) -> list[str]:
    """Every file under `prefix` (recursively, sorted), as URIs of the same kind as `prefix` (local: paths), but
    those `scan_files` skips.

    `suffixes` (case-insensitive, e.g. `(".mp4", ".mov")`) keeps only matching names. A prefix that holds nothing
    gives []; an unreachable store or a missing bucket raises StorageError.
    """
    return scan_files(prefix, suffixes)[0]


SKIPPED_DOT_SEGMENT = ("a `.` or `..` segment in the key: tools that resolve paths read another object by that "
                       "name, and its outputs could not be keyed as the input is; rename the object to include it")
SKIPPED_HIDDEN = ("a hidden name (a dot in front: temporaries of unfinished writes, macOS `._` files); "
                  "rename it to include it")


def scan_files(prefix: str | Path, suffixes: Iterable[str] | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """`list_files`'s files, and the matching ones it skipped, as {why: URIs}: names with a `.` or `..` segment
    below `prefix` (an object store allows them) and hidden names (a name below `prefix` that starts with a dot:
    temporaries of unfinished writes, `.partial/` and `.x.mp4.partial-*`, and macOS debris, `._x.mp4`)."""
    fs, root = _fs(prefix)
    wanted = tuple(s.lower() for s in suffixes) if suffixes is not None else None
    with _reporting(prefix, "list"):
        fs.invalidate_cache(root)
        found = fs.find(root)
    root = root.rstrip("/")
    keep, skipped = [], {}
    for path in found:
        if wanted is not None and not path.lower().endswith(wanted):
            continue
        inside = (path[len(root):] if path.startswith(root) else path).strip("/").split("/")
        why = (SKIPPED_DOT_SEGMENT if {".", ".."} & set(inside) else
               SKIPPED_HIDDEN if any(part.startswith(".") for part in inside) else None)
        if why:
            skipped.setdefault(why, []).append(_to_uri(fs, path))
        else:
            keep.append(_to_uri(fs, path))
    return sorted(keep), {why: sorted(uris) for why, uris in skipped.items()}


def read_many(uris: list[str]) -> list[bytes]:
    """The contents of many small files on one store, fetched concurrently where the store allows (S3)."""
    if not uris:
        return []
    fs, _ = _fs(uris[0])
    paths = [_fs(u)[1] for u in uris]
    with _reporting(uris[0] if len(uris) == 1 else f"{uris[0]} (and {len(uris) - 1} more)", "read"):
        got = fs.cat(paths, on_error="raise")
    return [got[p] for p in paths]


# --- atomic writes -----------------------------------------------------------------------------------------------


def _local_partial(folder: str, suffix: str) -> Path:
    """Create an empty `folder/.partial/<uuid><suffix>`.

    Writers remove `.partial` when they leave it empty, so it can vanish between `makedirs` and `open` (or inside
    `makedirs`, which then reports FileExistsError): retry."""
    partial_dir = os.path.join(folder, PARTIAL_DIR)
    for _ in range(20):
        path = os.path.join(partial_dir, uuid.uuid4().hex + suffix)
        try:
            os.makedirs(partial_dir, exist_ok=True)
            with open(path, "xb"):
                return Path(path)
        except (FileNotFoundError, FileExistsError):
            continue
    raise FileNotFoundError(f"{partial_dir} keeps disappearing")


@contextlib.contextmanager
def atomic_output(uri: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a local file path to write; when the block ends without error its content becomes `uri` at once.

    This is the one way dva writes an output. Local targets: the file lives in `<folder>/.partial/` (same file
    system) and is renamed over `uri` (os.replace). Remote targets: the file lives in the local temporary folder and
    is uploaded straight to `uri`; an object store shows an object only once its PUT (or multipart upload) is
    complete, so readers see the old object or the whole new one. On any error nothing is written to `uri` (an
    earlier version stays as it was) and the temporary file is removed. Each call has its own temporary file, so
    concurrent writers of one `uri` never share one; the last to commit wins. The local file keeps the target's
    extension (or `suffix`), for writers that pick a format from it.
    """
    fs, path = _fs(uri)
    suffix = posixpath.splitext(path)[1] if suffix is None else suffix
    local = _is_local(fs)
    with _reporting(uri, "write"):
        if local:
            tmp = _local_partial(posixpath.dirname(path.rstrip("/")), suffix)
        else:
            fd, name = tempfile.mkstemp(prefix="dva-", suffix=suffix)
            os.close(fd)
            tmp = Path(name)
    try:
        yield tmp
        with _reporting(uri, "write"):
            if local:
                os.replace(tmp, path)
            else:
                fs.put_file(str(tmp), path)
                fs.invalidate_cache(path)
    finally:
        tmp.unlink(missing_ok=True)
        if local:
            with contextlib.suppress(OSError):  # still in use by another writer: theirs to remove
                os.rmdir(tmp.parent)


def write_bytes_atomic(uri: str | Path, data: bytes) -> None:
    """Write `data` to `uri` through `atomic_output`: readers see either the old content or all of the new."""
    with atomic_output(uri) as tmp:
        tmp.write_bytes(data)


def remove_prefix(prefix: str | Path) -> None:
    """Delete everything under `prefix` (a folder, or every key below an S3 prefix); nothing there is no error."""
    fs, path = _fs(prefix)
    with _reporting(prefix, "delete"):
        fs.invalidate_cache(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.invalidate_cache(path)


def remove_empty_folder(uri: str | Path) -> None:
    """Remove the local folder `uri` if it is empty (object stores have no folders to leave behind)."""
    if not is_remote(str(uri)):
        with contextlib.suppress(OSError):  # not empty (another writer's files), or already gone
            os.rmdir(str(uri).removeprefix("file://"))


def _modified(info: dict) -> float | None:
    """Modification time (epoch seconds) from an fsspec `info`: `mtime` locally, `LastModified` on S3."""
    if "mtime" in info:
        return float(info["mtime"])
    stamp = info.get("LastModified")
    return stamp.timestamp() if stamp is not None else None


def sweep_partials(prefix: str | Path, older_than_s: float) -> int:
    """Delete the temporaries that killed writers left under `prefix` (files in `.partial/` folders: local writes,
    and uploads of dva versions that staged objects there) once they are older than `older_than_s`; return how many.
    Younger ones may belong to a writer still at work (another job on the same output), so keep the age well above
    the longest write."""
    fs, root = _fs(prefix)
    with _reporting(prefix, "list"):
        fs.invalidate_cache(root)
        if not fs.exists(root):
            return 0
        found = fs.find(root, detail=True)
    now, removed = time.time(), 0
    for path, info in found.items():
        if PARTIAL_DIR not in path[len(root.rstrip("/")):].split("/")[:-1]:
            continue
        modified = _modified(info)
        if modified is None or now - modified < older_than_s:
            continue
        with _reporting(_to_uri(fs, path), "delete"):
            fs.rm(path)
        removed += 1
    return removed


# --- keys ---------------------------------------------------------------------------------------------------------


def canonical_uri(uri: str | Path) -> str:
    """One spelling per location: local paths absolute and without `file://`, remote URIs without user-info."""
    uri = str(uri).removeprefix("file://")
    if _SCHEME.match(uri):
        return _USERINFO.sub(r"\1", uri)
    return os.path.abspath(os.path.expanduser(uri))


def video_id(input_uri: str | Path) -> str:
    """A stable 12-hex-digit id of an input location: the same on every run and machine."""
    return hashlib.sha256(canonical_uri(input_uri).encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _clean_part(part: str) -> str:
    part = "".join(ch for ch in part if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    part = unicodedata.normalize("NFC", part).strip()
    if set(part) <= {"."}:  # "", ".", "..": no name, or a step out of the folder
        return ""
    if part.startswith("."):  # hidden names (`.partial`) belong to the storage layer
        part = "_" + part.lstrip(".")
    if len(part.encode()) > _MAX_PART_BYTES:
        stem, ext = os.path.splitext(part)
        ext = ext if len(ext.encode()) <= 16 else ""
        part = stem.encode()[: _MAX_PART_BYTES - len(ext.encode())].decode("utf-8", "ignore") + ext
    return part


def output_key(input_uri: str | Path, input_prefix: str | Path) -> str:
    """The key (a relative `/`-separated path) under which the outputs of `input_uri` are written.

    Rule: take the input's path relative to `input_prefix` (a relative `input_uri` is relative to the prefix; an
    input outside the prefix uses its whole location, bucket or folders included). Split it on `/` and `\\`; in
    each part drop control, invisible-format and unpaired-surrogate characters, NFC-normalise, trim surrounding
    spaces, drop empty, `.` and `..` parts, turn a leading `.` into `_`, and shorten parts over 200 bytes. If the
    result differs from the relative path as given (or the input lies outside the prefix), append
    `-<first 8 hex digits of video_id>` to the file name, before its extension.

    So clean names keep their path (spaces and letters of any script included), no key can leave the output
    prefix, and two inputs never share a key: a clean key is its own relative path, a cleaned one carries a hash
    of its input's location.
    """
    uri = str(input_uri)
    if not _SCHEME.match(uri) and not os.path.isabs(os.path.expanduser(uri.removeprefix("file://"))):
        uri = join(input_prefix, uri)
    uri = canonical_uri(uri)
    prefix = canonical_uri(input_prefix).rstrip("/")
    if uri == prefix:  # the prefix is the video itself
        raw = uri.rsplit("/", 1)[-1]
    elif uri.startswith(prefix + "/"):
        raw = uri[len(prefix) + 1 :]
    else:
        raw = None
    parts = [_clean_part(p) for p in re.split(r"[/\\]", _SCHEME.sub("", uri) if raw is None else raw)]
    key = "/".join(p for p in parts if p) or "video"
    if key == raw:
        return key
    folder, _, name = key.rpartition("/")
    stem, ext = os.path.splitext(name)
    return join(folder, f"{stem}-{video_id(uri)[:8]}{ext}") if folder else f"{stem}-{video_id(uri)[:8]}{ext}"
