"""Where evaluation results live and how they are written: `<output>/eval/<mode>/` holds Parquet tables and a
`summary.json` that names them relative to itself, so the folder can be moved or copied as a whole.

`dva eval` writes the folder and `dva report` reads it. Every file is written atomically (local or s3://); the
summary is written last, so a summary that exists always names tables that exist.
"""

from __future__ import annotations

import json
import math
import time

import pyarrow as pa
import pyarrow.parquet as pq

from dva.errors import StorageError
from dva.storage import exists, join, open_file, redact, write_bytes_atomic

SUMMARY = "summary.json"


def eval_prefix(output_prefix: str, mode: str) -> str:
    """The folder of one evaluation mode's results under an output prefix."""
    return join(output_prefix, "eval", mode)


def write_table(uri: str, rows: list[dict], schema: pa.Schema) -> str:
    """Write `rows` (dicts with the schema's columns) as one Parquet file at `uri`, atomically."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    write_bytes_atomic(uri, sink.getvalue().to_pybytes())
    return uri


def finite(value):
    """JSON has no NaN or infinity: such values (an undefined mean, the PSNR of identical images) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_summary(prefix: str, summary: dict) -> str:
    """Write `summary` (tables named by file name relative to `prefix`) as `<prefix>/summary.json`; return its URI."""
    uri = join(prefix, SUMMARY)
    body = finite({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **summary})
    write_bytes_atomic(uri, json.dumps(body, indent=1, allow_nan=False).encode())
    return uri


def summary_uri(location: str) -> str:
    """The summary file named by `location`: the file itself, or the folder that holds it."""
    location = str(location)
    return location if location.endswith(".json") else join(location, SUMMARY)


def read_summary(location: str) -> dict:
    """A summary as written by `write_summary`, plus `_folder`: where its tables are resolved from."""
    uri = summary_uri(location)
    with open_file(uri) as f:
        try:
            summary = json.loads(f.read())
        except ValueError as err:
            raise StorageError(f"{redact(uri)} is not an evaluation summary ({err}); rerun `dva eval`") from None
    summary["_folder"] = uri.rsplit("/", 1)[0]
    return summary


def read_table(summary: dict, name: str) -> pa.Table | None:
    """The table a summary names under `name` ("results", "frames"), or None when it names none."""
    file = summary.get(name)
    if not file:
        return None
    uri = join(summary["_folder"], file)
    if not exists(uri):
        raise StorageError(f"{redact(uri)}, named by its evaluation summary, is missing; rerun `dva eval`")
    with open_file(uri) as f:
        return pq.read_table(pa.BufferReader(f.read()))
