"""The results manifest: one row per (video, edit) the job finished, under `<output>/manifest/`.

Each finished pair writes its own small Parquet file, `manifest/parts/<video_id>-<edit_id>.parquet`, atomically, so
concurrent workers never write the same object and a rerun of a pair simply replaces its row. A pair counts as done
(`completed`) only when its row says "ok" and its output exists; a worker therefore commits the output first and
the row second, and a crash between the two only means the pair is redone. `write_summary` gathers every part
into `manifest/results.parquet`.

Edited videos go to `output_uri(...)` = `<output>/videos/<key>/<edit_id>.mp4`: one folder per input key, so inputs
that differ only by extension (`a.mov`, `a.mp4`) never meet, and nothing lands inside `manifest/`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from dva.editing.edits import parse_edit
from dva.errors import StorageError
from dva.storage import canonical_uri, exists, join, list_files, read_many, redact, write_bytes_atomic

STATUSES = ("ok", "failed", "skipped")
MAX_ERROR_CHARS = 2000

SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("video_id", pa.string()),
        ("edit", pa.string()),
        ("edit_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("frames", pa.int64()),
        ("fps", pa.float64()),
        ("seconds", pa.float64()),
        ("output", pa.string()),
        ("direction", pa.string()),  # clip edits: the direction file the edit decoded with
        ("direction_cached", pa.bool_()),  # clip edits: whether that file came from the cache (not optimised now)
        ("fingerprint", pa.string()),  # the source version, model, settings and edit files the output was made from
        ("faces", pa.string()),  # the face tracks the edit was applied to, e.g. "0,1" (latents/<video>/tracks.json)
        ("random_weights", pa.bool_()),  # made by a UNet with random weights (`random_weights: true`): not an edit
    ]
)
# Columns added after the first release: parts written before them read back with nulls there.
LATER_COLUMNS = ("direction", "direction_cached", "fingerprint", "faces", "random_weights")


def edit_id(edit: str) -> str:
    """The file-name-safe id of an edit spec (`dva.editing.edits.EditSpec.edit_id`); "encode" for encode-only rows."""
    return parse_edit(edit).edit_id if edit else "encode"


def output_uri(output_prefix: str, key: str, edit: str, ext: str = ".mp4") -> str:
    """Where the edited video of input `key` (from `VideoInput.key`) with `edit` is written."""
    return join(output_prefix, "videos", key, edit_id(edit) + ext)


def _text(value) -> str | None:
    """Redacted text that Parquet can store (undecodable file-name bytes become escapes)."""
    if value is None:
        return None
    return redact(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class ResultRow:
    """What happened to one (video, edit). Strings are redacted on creation: no credentials reach the manifest."""

    video: str
    video_id: str
    edit: str
    status: str
    error: str | None = None
    frames: int | None = None
    fps: float | None = None
    seconds: float | None = None
    output: str | None = None
    direction: str | None = None
    direction_cached: bool | None = None
    fingerprint: str | None = None
    faces: str | None = None
    random_weights: bool | None = None
    edit_id: str = field(init=False)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        self.edit_id = edit_id(self.edit)
        self.video, self.edit, self.output = _text(self.video), _text(self.edit), _text(self.output)
        self.direction = _text(self.direction)
        self.error = _text(self.error)
        if self.error is not None and len(self.error) > MAX_ERROR_CHARS:
            self.error = self.error[: MAX_ERROR_CHARS - 3] + "..."


def _manifest_dir(output_prefix: str) -> str:
    return join(output_prefix, "manifest")


def part_uri(output_prefix: str, video_id: str, edit: str) -> str:
    return join(_manifest_dir(output_prefix), "parts", f"{video_id}-{edit_id(edit)}.parquet")


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_result(output_prefix: str, row: ResultRow) -> str:
    """Record `row` as its own part file (atomically, replacing an earlier row of the same pair); return its URI."""
    uri = part_uri(output_prefix, row.video_id, row.edit)
    write_bytes_atomic(uri, _parquet_bytes(pa.Table.from_pylist([asdict(row)], schema=SCHEMA)))
    return uri


def read_manifest(output_prefix: str) -> pa.Table:
    """Every recorded row (columns as in SCHEMA), from all part files; an empty table before the first result."""
    parts = list_files(join(_manifest_dir(output_prefix), "parts"), (".parquet",))
    tables = []
    for uri, data in zip(parts, read_many(parts)):
        try:
            table = pq.read_table(pa.BufferReader(data))
            for name in LATER_COLUMNS:
                if name not in table.column_names:
                    table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
            tables.append(table.select(SCHEMA.names).cast(SCHEMA))
        except (pa.ArrowException, KeyError) as err:
            raise StorageError(
                f"manifest part {redact(uri)} is unreadable ({type(err).__name__}: {err}); "
                "delete it and rerun to redo that video"
            ) from None
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def completed(output_prefix: str,
              fingerprints: dict[tuple[str, str], str] | None = None) -> set[tuple[str, str]]:
    """The (video_id, edit_id) pairs whose row says "ok" and whose output exists: what a rerun may skip. With
    `fingerprints` ({(video_id, edit_id): fingerprint}), only rows made from that fingerprint count: an output of a
    replaced source, of other weights or settings, or of an edit file replaced in place is made again."""
    rows = [r for r in read_manifest(output_prefix).to_pylist() if r["status"] == "ok" and r["output"]
            and (fingerprints is None or r["fingerprint"] == fingerprints.get((r["video_id"], r["edit_id"])))]
    if not rows:
        return set()
    videos = join(output_prefix, "videos")
    listed = canonical_uri(videos) + "/"
    present = {canonical_uri(uri) for uri in list_files(videos)}  # one listing instead of a check per row
    done = set()
    for row in rows:
        out = canonical_uri(row["output"])
        if out in present or (not out.startswith(listed) and exists(out)):
            done.add((row["video_id"], row["edit_id"]))
    return done


def write_summary(output_prefix: str) -> str:
    """Gather every row, sorted by video and edit, into `manifest/results.parquet` (atomically); return its URI."""
    table = read_manifest(output_prefix).sort_by([("video", "ascending"), ("edit", "ascending")])
    uri = join(_manifest_dir(output_prefix), "results.parquet")
    write_bytes_atomic(uri, _parquet_bytes(table))
    return uri


@dataclass
class JobSummary:
    """What a job did: pairs finished, failed and skipped, work done, and where its manifest is."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0  # face frames encoded or edited: each face track's frames once, whatever the edits
    unet_calls: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    manifest: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.failed and not self.ok and not self.skipped else 0
