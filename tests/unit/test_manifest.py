"""Results manifest: part files from concurrent workers merge; only committed outputs count as done."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dva.runtime.manifest import (
    LATER_COLUMNS,
    SCHEMA,
    ResultRow,
    completed,
    edit_id,
    output_uri,
    read_manifest,
    write_result,
    write_summary,
)
from dva.storage import join, list_files, open_file, video_id, write_bytes_atomic


def _row(video: str, edit: str, status: str = "ok", output: str | None = None, **kw) -> ResultRow:
    return ResultRow(video=video, video_id=video_id(video), edit=edit, status=status, output=output, **kw)


def test_parts_from_concurrent_writers_merge(storage_root):
    edits = ["classifier:Smiling:0.5", "classifier:Young:-1", "reconstruct"]

    def worker(w: int) -> None:
        for v in range(4):
            for edit in edits:
                write_result(storage_root, _row(f"s3://in/w{w}/v{v}.mp4", edit, frames=10 * w + v, fps=25.0))

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(worker, range(3)))  # re-raises a worker's error
    table = read_manifest(storage_root)
    assert table.schema == SCHEMA
    assert table.num_rows == 3 * 4 * 3
    pairs = set(zip(table["video_id"].to_pylist(), table["edit_id"].to_pylist()))
    assert len(pairs) == 36
    assert sorted(table["frames"].to_pylist()) == sorted(10 * w + v for w in range(3) for v in range(4) for _ in edits)


def test_rerun_of_a_pair_replaces_its_row(storage_root):
    write_result(storage_root, _row("/in/a.mp4", "classifier:Smiling:1", status="failed", error="decoder crashed"))
    write_result(storage_root, _row("/in/a.mp4", "classifier:Smiling:1", output=join(storage_root, "videos/a.mp4/x.mp4")))
    table = read_manifest(storage_root)
    assert table["status"].to_pylist() == ["ok"] and table["error"].to_pylist() == [None]


def test_completed_counts_only_ok_rows_whose_output_exists(storage_root):
    done = _row("/in/done.mp4", "classifier:Smiling:1", output=output_uri(storage_root, "done.mp4", "classifier:Smiling:1"))
    failed = _row("/in/failed.mp4", "classifier:Smiling:1", "failed", output=output_uri(storage_root, "failed.mp4", "classifier:Smiling:1"))
    lost = _row("/in/lost.mp4", "classifier:Smiling:1", output=output_uri(storage_root, "lost.mp4", "classifier:Smiling:1"))
    skipped = _row("/in/skipped.mp4", "classifier:Smiling:1", "skipped")
    elsewhere = _row("/in/elsewhere.mp4", "classifier:Smiling:1", output=join(storage_root, "custom", "elsewhere.mp4"))
    for row in (done, failed, elsewhere):
        write_bytes_atomic(row.output, b"video")
    for row in (done, failed, lost, skipped, elsewhere):
        write_result(storage_root, row)
    assert completed(storage_root) == {(done.video_id, done.edit_id), (elsewhere.video_id, elsewhere.edit_id)}


def test_completed_compares_each_pair_with_its_own_fingerprint(storage_root):
    rows = [_row("/in/a.mp4", edit, output=output_uri(storage_root, "a.mp4", edit), fingerprint=f"made from {edit}")
            for edit in ("classifier:Smiling:1", "reconstruct")]
    for row in rows:
        write_bytes_atomic(row.output, b"video")
        write_result(storage_root, row)
    smiling, reconstruct = ((row.video_id, row.edit_id) for row in rows)
    now = {smiling: "made from classifier:Smiling:1", reconstruct: "made from reconstruct"}
    assert completed(storage_root, now) == {smiling, reconstruct}
    assert completed(storage_root, {**now, smiling: "classifier file replaced"}) == {reconstruct}


def test_empty_output_has_an_empty_manifest(storage_root):
    assert read_manifest(storage_root).num_rows == 0
    assert completed(storage_root) == set()


def test_summary_gathers_all_rows_sorted(storage_root):
    for name in ("c", "a", "b"):
        write_result(storage_root, _row(f"/in/{name}.mp4", "classifier:Smiling:1", frames=3, fps=25.0, seconds=1.5))
    uri = write_summary(storage_root)
    assert uri == join(storage_root, "manifest", "results.parquet")
    with open_file(uri) as f:
        summary = pq.read_table(f)
    assert summary["video"].to_pylist() == ["/in/a.mp4", "/in/b.mp4", "/in/c.mp4"]
    assert read_manifest(storage_root).num_rows == 3  # the summary is not read back as a part
    assert len(list_files(join(storage_root, "manifest", "parts"))) == 3


def test_manifest_rows_carry_no_secrets(storage_root, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-abcdef123456")
    row = _row(
        "s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI@bucket/a.mp4",
        "classifier:Smiling:1",
        "failed",
        error="403 for https://h/a.mp4?X-Amz-Signature=deadbeef with token session-token-abcdef123456",
    )
    write_result(storage_root, row)
    stored = read_manifest(storage_root).to_pylist()[0]
    text = repr(stored)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "deadbeef", "session-token-abcdef123456"):
        assert secret not in text
    assert stored["video"] == "s3://***@bucket/a.mp4"


def test_result_row_checks_status_and_bounds_errors():
    with pytest.raises(ValueError, match="status"):
        _row("/in/a.mp4", "classifier:Smiling:1", "done")
    assert len(_row("/in/a.mp4", "classifier:Smiling:1", "failed", error="x" * 10_000).error) == 2000
    undecodable = _row("/in/\udcff.mp4", "classifier:Smiling:1", "failed")  # a non-UTF-8 local file name
    assert pa.array([undecodable.video]).to_pylist() == ["/in/\\xff.mp4"]


def test_edit_ids_are_safe_distinct_and_stable():
    ids = [edit_id(e) for e in ("classifier:Smiling:0.5", "classifier:Smiling:-0.5", "identity:../../x.png",
                                "identity:é/ü.png", "reconstruct", "")]
    assert len(set(ids)) == len(ids)
    assert all("/" not in i and not i.startswith(".") for i in ids)
    assert edit_id("classifier:Smiling:0.5") == edit_id("classifier:Smiling:+0.50")  # one id per edit, any spelling
    assert edit_id("") == "encode"
    assert output_uri("s3://b/out", "a b/c.mp4", "reconstruct") == "s3://b/out/videos/a b/c.mp4/reconstruct.mp4"


def test_parts_written_before_the_later_columns_still_read(storage_root):
    old_schema = pa.schema([f for f in SCHEMA if f.name not in LATER_COLUMNS])
    row = {k: v for k, v in vars(_row("s3://in/old.mp4", "reconstruct")).items() if k in old_schema.names}
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([row], schema=old_schema), sink)
    write_bytes_atomic(join(storage_root, "manifest", "parts", "old-reconstruct.parquet"), sink.getvalue().to_pybytes())
    write_result(storage_root, _row("s3://in/new.mp4", 'clip:"face":"old face":1', direction="s3://d/x.safetensors",
                                    direction_cached=True, random_weights=True))
    rows = {r["video"]: r for r in read_manifest(storage_root).to_pylist()}
    assert all(rows["s3://in/old.mp4"][name] is None for name in LATER_COLUMNS)
    assert rows["s3://in/new.mp4"]["direction"] == "s3://d/x.safetensors"
    assert rows["s3://in/new.mp4"]["direction_cached"] is True and rows["s3://in/new.mp4"]["random_weights"] is True
