"""Input discovery: a prefix of videos or a manifest file, local or on S3."""

from __future__ import annotations

import io
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dva.errors import StorageError
from dva.runtime.inputs import discover_inputs
from dva.storage import SKIPPED_HIDDEN, join, video_id, write_bytes_atomic


def _put(root: str, *names: str) -> None:
    for name in names:
        write_bytes_atomic(join(root, name), b"video")


def test_prefix_lists_videos_sorted_with_clean_keys(storage_root):
    _put(storage_root, "b.mp4", "a/x.MOV", "a/y.webm", "notes.txt", "a b/é.mkv")
    fs, path = fsspec.core.url_to_fs(join(storage_root, ".partial", "half.mp4"))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, b"half")
    inputs = discover_inputs(storage_root)
    assert [i.key for i in inputs] == ["a b/é.mkv", "a/x.MOV", "a/y.webm", "b.mp4"]
    assert [i.uri for i in inputs] == [join(storage_root, i.key) for i in inputs]
    assert [i.video_id for i in inputs] == [video_id(i.uri) for i in inputs]
    assert all(i.edits is None for i in inputs)
    assert [i.key for i in discover_inputs(storage_root, suffixes=(".mp4",))] == ["b.mp4"]


def test_a_single_video_is_its_own_input(storage_root):
    _put(storage_root, "only.mp4")
    [one] = discover_inputs(join(storage_root, "only.mp4"))
    assert one.key == "only.mp4"


def test_prefix_without_videos_says_so(storage_root):
    _put(storage_root, "readme.txt")
    with pytest.raises(StorageError, match=f"no video files .* under {storage_root}"):
        discover_inputs(storage_root)
    with pytest.raises(StorageError, match=f"input {storage_root}/missing does not exist.*manifest"):
        discover_inputs(join(storage_root, "missing"))


def test_missing_bucket_is_named(s3_server):
    with pytest.raises(StorageError, match="s3://no-such-bucket-dva/in.*does not exist"):
        discover_inputs("s3://no-such-bucket-dva/in")


def _csv(rows: list[list[str]]) -> bytes:
    return "\n".join(",".join(r) for r in rows).encode()


def test_csv_manifest_resolves_relative_uris_dedupes_and_reads_edits(storage_root, tmp_path):
    _put(storage_root, "lists/clips/a.mp4", "videos/b.mp4")
    elsewhere = str(tmp_path / "elsewhere.mp4")
    manifest = join(storage_root, "lists", "batch.csv")
    write_bytes_atomic(
        manifest,
        _csv(
            [
                ["uri", "edits"],
                ["clips/a.mp4", '"smile=+0.5; age=-1"'],
                ["../videos/b.mp4", ""],
                [join(storage_root, "lists/clips/a.mp4"), "smile=+0.5;age=-1"],  # the same video again
                [elsewhere, '"[""beard=1""]"'],
            ]
        ),
    )
    inputs = discover_inputs(manifest)
    expected = [join(storage_root, "lists/clips/a.mp4"), join(storage_root, "videos/b.mp4"), elsewhere]
    assert [i.uri for i in inputs] == expected
    assert [i.edits for i in inputs] == [("smile=+0.5", "age=-1"), None, ("beard=1",)]
    assert inputs[0].key == "clips/a.mp4"  # relative to the manifest's folder
    # outside the manifest's folder: the whole location, plus a hash
    assert inputs[1].key == f"{storage_root.removeprefix('s3://').lstrip('/')}/videos/b-{inputs[1].video_id[:8]}.mp4"
    assert len({i.key for i in inputs}) == 3


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_jsonl_manifests(tmp_path, fmt):
    rows = [
        {"uri": "a.mp4", "edits": ["smile=1", "age=2"]},
        {"uri": "b.mp4", "edits": None},
        {"uri": "c.mp4", "edits": "x;y"},
    ]
    path = tmp_path / f"m.{fmt}"
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows[:2]), buf)
        path.write_bytes(buf.getvalue())
        rows = rows[:2]
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    inputs = discover_inputs(str(path))
    assert [i.uri for i in inputs] == [str(tmp_path / r["uri"]) for r in rows]
    assert [i.edits for i in inputs] == [("smile=1", "age=2"), None, ("x", "y")][: len(rows)]


def test_bad_manifests_say_what_to_fix(tmp_path):
    no_uri = tmp_path / "no_uri.csv"
    no_uri.write_text("path\na.mp4\n")
    with pytest.raises(StorageError, match=r"no_uri.csv, row 1: needs a non-empty `uri` \(found \['path'\]\)"):
        discover_inputs(str(no_uri))
    conflict = tmp_path / "conflict.jsonl"
    conflict.write_text('{"uri": "a.mp4", "edits": ["smile=1"]}\n{"uri": "./a.mp4", "edits": ["age=1"]}\n')
    with pytest.raises(StorageError, match="twice with different edits"):
        discover_inputs(str(conflict))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"uri": "a.mp4"\n')
    with pytest.raises(StorageError, match="cannot read manifest .*broken.jsonl"):
        discover_inputs(str(broken))
    with pytest.raises(StorageError, match="missing.csv.*does not exist"):
        discover_inputs(str(tmp_path / "missing.csv"))


def _put_raw(root: str, *names: str) -> None:
    """Objects (or files) at exactly these names, `.` and `..` segments kept (an object store allows them)."""
    for name in names:
        fs, path = fsspec.core.url_to_fs(f"{root}/{name}")
        if fs.protocol != "s3" and "file" in fs.protocol:
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, b"video")


def test_skipped_objects_are_counted_and_named_in_one_line_per_reason(storage_root):
    hidden = [".a.mp4", "clips/._b.mp4", ".cache/c.mp4", "clips/.partial/d.mp4", ".e.mp4", ".f.mp4"]
    _put_raw(storage_root, "ok.mp4", "clips/ok2.mp4", ".DS_Store", "notes.txt", *hidden)
    lines: list[str] = []
    inputs = discover_inputs(storage_root, skipped=lines.append)
    assert [i.key for i in inputs] == ["clips/ok2.mp4", "ok.mp4"]
    [line] = lines  # `.DS_Store` and `notes.txt` are no videos: nothing was skipped there
    named = sorted(hidden)[:5]
    assert line.startswith(f"skipped 6 object(s) under {storage_root}: " + ", ".join(map(repr, named))
                           + " (and 1 more): a hidden name"), line


def test_keys_with_dot_segments_are_skipped_and_named_with_why(s3_bucket):
    root = f"{s3_bucket}/in"
    _put_raw(root, "ok.mp4", "a/../b.mp4", "a/./c.mp4", "../d.mp4", "x/.hidden.mp4")
    lines: list[str] = []
    assert [i.key for i in discover_inputs(root, skipped=lines.append)] == ["ok.mp4"]
    dots = next(line for line in lines if "segment" in line)
    assert dots.startswith(f"skipped 3 object(s) under {root}: '../d.mp4', 'a/../b.mp4', 'a/./c.mp4': "
                           "a `.` or `..` segment in the key"), lines
    assert "rename" in dots
    assert any(line.startswith(f"skipped 1 object(s) under {root}: 'x/.hidden.mp4': a hidden name") for line in lines)


def test_skipped_objects_are_logged_on_the_driver_by_default(storage_root, caplog):
    _put_raw(storage_root, "ok.mp4", ".hidden.mp4")
    with caplog.at_level("WARNING", logger="dva.runtime.inputs"):
        discover_inputs(storage_root)
    assert [r.getMessage() for r in caplog.records] == [
        f"skipped 1 object(s) under {storage_root}: '.hidden.mp4': " + SKIPPED_HIDDEN]


def test_skipped_names_are_printed_escaped(tmp_path):
    root = str(tmp_path / "in")
    _put_raw(root, "ok.mp4", ".x\x1b[2K\r[dva] done\u202e.mp4")
    lines: list[str] = []
    discover_inputs(root, skipped=lines.append)
    assert "\\x1b[2K\\r[dva] done\\u202e.mp4" in lines[0] and "\x1b" not in lines[0] and "\r" not in lines[0]
