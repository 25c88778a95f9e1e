"""The report's "Faces found": each video's face tracks from its `tracks.json`; outputs without one are skipped."""

from __future__ import annotations

import json

import pytest

from dva.errors import StorageError
from dva.latents import LatentStore, read_tracks_summary
from dva.report.edit_report import write_edit_report
from dva.runtime.manifest import ResultRow, write_result
from dva.storage import open_file, video_id, write_bytes_atomic


def _encoded(output: str, video: str, tracks: dict | None = None) -> str:
    """Record an encode-only row of `video` (the report then reads no video file) and its tracks.json if given."""
    vid = video_id(video)
    write_result(output, ResultRow(video=video, video_id=vid, edit="", status="ok", frames=48, fps=25.0))
    if tracks is not None:
        write_bytes_atomic(LatentStore(output, vid).tracks_summary_uri, json.dumps(tracks).encode())
    return vid


def _faces_found(output: str) -> str:
    with open_file(write_edit_report(output)) as f:
        page = f.read().decode()
    if "<h2>Faces found</h2>" not in page:
        return ""
    return page.split("<h2>Faces found</h2>", 1)[1].split("<h2>", 1)[0]


def test_faces_found_lists_each_videos_tracks_and_identity_distances(storage_root):
    three = {"video": "/in/panel.mp4", "num_frames": 48,
             "tracks": [{"index": 0, "first": 0, "last": 47, "detected": 48, "size": 108.4},
                        {"index": 1, "first": 24, "last": 47, "detected": 20, "size": 81.0},
                        {"index": 2, "first": 5, "last": 14, "detected": 10, "size": 60.6}],
             "identity_distance": [[0, 0.4, 0.7], [0.4, 0, 0.2], [0.7, 0.2, 0]]}
    one = {"video": "/in/solo.mp4", "num_frames": 16,
           "tracks": [{"index": 0, "first": 0, "last": 15, "detected": 16, "size": 120.0}],
           "identity_distance": [[0.0]]}
    vid = _encoded(storage_root, "/in/panel.mp4", three)
    _encoded(storage_root, "/in/solo.mp4", one)
    _encoded(storage_root, "/in/older.mp4")
    section = _faces_found(storage_root)
    assert "panel.mp4" in section and "solo.mp4" in section and "older.mp4" not in section
    assert "<td>1</td><td>24–47</td><td>20 of 24</td><td>81</td>" in section
    assert "<td>2</td><td>5–14</td><td>10 of 10</td><td>61</td>" in section
    assert "3 face track(s) in 48 frames" in section and "largest 0.700, smallest 0.200" in section
    assert "1 face track(s) in 16 frames." in section and section.count("largest") == 1
    assert read_tracks_summary(storage_root, vid) == three
    assert read_tracks_summary(storage_root, video_id("/in/older.mp4")) is None


def test_outputs_without_tracks_have_no_faces_section_and_a_broken_one_is_named(tmp_path):
    output = str(tmp_path / "out")
    vid = _encoded(output, "/in/older.mp4")
    assert _faces_found(output) == ""
    write_bytes_atomic(LatentStore(output, vid).tracks_summary_uri, b"{not json")
    with pytest.raises(StorageError, match="tracks.json is not a face-track summary"):
        read_tracks_summary(output, vid)
    assert "cannot read its face tracks" in _faces_found(output)
