"""The videos a batch job edits: every video file under a prefix, or the rows of a manifest file.

A manifest is a CSV (header row), Parquet or JSON-lines file with a `uri` column and an optional `edits` column
that replaces the job's edits for that video. In CSV, `edits` is `;`-separated edit specs or a JSON list; in
Parquet and JSONL, a list of strings or such a string. Empty means "the job's edits". Relative URIs are relative to
the manifest's folder, and output keys are taken relative to it (see `dva.storage.output_key`).

A folder or prefix skips hidden names and keys with a `.` or `..` segment (`dva.storage.scan_files`), never in
silence: one line per reason names them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from dva.errors import StorageError
from dva.storage import (
    canonical_uri,
    exists,
    is_remote,
    open_file,
    output_key,
    redact,
    scan_files,
    shown,
    video_id,
)

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".jsonl")
SHOWN_SKIPPED = 5  # skipped objects named in a line; the others are counted


@dataclass(frozen=True)
class VideoInput:
    """One video to process: where it is, the key its outputs go under, and its own edits (None: the job's)."""

    uri: str
    key: str
    video_id: str
    edits: tuple[str, ...] | None = None


def discover_inputs(source: str, suffixes: tuple[str, ...] = VIDEO_SUFFIXES, *,
                    skipped: Callable[[str], object] = log.warning) -> list[VideoInput]:
    """The videos named by `source`: a folder or prefix (local or s3://), a single video, or a manifest file.

    Prefix inputs are sorted by URI; manifest inputs keep the manifest's order. An input listed twice is kept once.
    Video files of a prefix that are not taken (`dva.storage.scan_files`) are named in one line per reason, given
    to `skipped` (by default logged: jobs call this on the driver).
    Raises StorageError naming `source` when it cannot be read, holds no videos, or lists a video twice with
    different edits.
    """
    source = str(source)
    if source.lower().endswith(MANIFEST_SUFFIXES):
        folder = _folder_of(source)
        rows = [(_resolve(uri, folder), edits) for uri, edits in _manifest_rows(source)]
        prefix = folder
    else:
        files, left_out = scan_files(source, suffixes)
        for why, uris in left_out.items():
            skipped(skipped_line(source, uris, why))
        rows = [(uri, None) for uri in files]
        prefix = source
        if not rows:
            raise StorageError(_nothing_found(source, suffixes))
    inputs: dict[str, VideoInput] = {}
    for uri, edits in rows:
        vid = video_id(uri)
        if vid in inputs:
            if inputs[vid].edits != edits:
                raise StorageError(
                    f"manifest {redact(source)} lists {redact(uri)} twice with different edits; "
                    "list each video once, with all its edits in one row"
                )
            continue
        inputs[vid] = VideoInput(uri=uri, key=output_key(uri, prefix), video_id=vid, edits=edits)
    _check_unique_keys(source, inputs.values())
    return list(inputs.values())


def skipped_line(source: str, uris: list[str], why: str) -> str:
    """`skipped N object(s) under SOURCE: a, b (and K more): WHY`, each object named below `source`."""
    root = canonical_uri(source).rstrip("/") + "/"
    names = ", ".join(repr(canonical_uri(u).removeprefix(root)) for u in uris[:SHOWN_SKIPPED])
    more = f" (and {len(uris) - SHOWN_SKIPPED} more)" if len(uris) > SHOWN_SKIPPED else ""
    return shown(f"skipped {len(uris)} object(s) under {source}: {names}{more}: {why}")


def _nothing_found(source: str, suffixes: tuple[str, ...]) -> str:
    kinds = ", ".join(suffixes)
    if not exists(source):
        return (
            f"input {redact(source)} does not exist (no such folder, or no objects under that prefix); "
            "check the path, or pass a manifest (.csv, .parquet or .jsonl) of video URIs"
        )
    return f"no video files ({kinds}) found under {redact(source)}; check the prefix, or pass a manifest of video URIs"


def _check_unique_keys(source: str, inputs) -> None:
    seen: dict[str, str] = {}
    for item in inputs:
        if item.key in seen:  # only if two 8-hex-digit hashes collide: refuse rather than overwrite
            raise StorageError(
                f"inputs {redact(seen[item.key])} and {redact(item.uri)} from {redact(source)} map to the same output "
                f"key {item.key!r}; rename one of them"
            )
        seen[item.key] = item.uri


def _folder_of(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if is_remote(uri) else os.path.dirname(canonical_uri(uri))


def _resolve(uri: str, folder: str) -> str:
    """An absolute location for a manifest entry; relative entries are relative to the manifest's folder."""
    uri = uri.strip()
    if is_remote(uri) or uri.startswith("file://") or os.path.isabs(os.path.expanduser(uri)):
        return uri
    if is_remote(folder):
        scheme, _, rest = folder.partition("://")
        bucket, _, path = rest.partition("/")
        return f"{scheme}://{bucket}{posixpath.normpath(posixpath.join('/', path, uri))}"
    return os.path.normpath(os.path.join(folder, uri))


def _manifest_rows(source: str) -> list[tuple[str, tuple[str, ...] | None]]:
    with open_file(source) as f:
        data = f.read()
    where = redact(source)
    suffix = source.lower().rsplit(".", 1)[-1]
    try:
        if suffix == "csv":
            records = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
        elif suffix == "parquet":
            records = pq.read_table(pa.BufferReader(data)).to_pylist()
        else:
            records = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    except (ValueError, pa.ArrowException, csv.Error) as err:  # JSON and UTF-8 errors are ValueErrors
        raise StorageError(f"cannot read manifest {where}: {type(err).__name__}: {err}") from None
    rows = []
    for n, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not isinstance(record.get("uri"), str) or not record["uri"].strip():
            columns = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise StorageError(
                f"manifest {where}, row {n}: needs a non-empty `uri` (found {columns}); "
                "give one video URI or path per row in a column named `uri`"
            )
        rows.append((record["uri"], _parse_edits(record.get("edits"), f"manifest {where}, row {n}")))
    return rows


def _parse_edits(value, where: str) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                raise StorageError(f"{where}: `edits` is not a JSON list of strings: {value!r}") from None
        else:
            value = value.split(";")
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise StorageError(f"{where}: `edits` must be a list of edit specs or a ';'-separated string, got {value!r}")
    edits = tuple(v.strip() for v in value if v.strip())
    return edits or None
