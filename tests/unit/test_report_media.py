"""Report links: outside files the report cannot reach by a relative link are copied in (small) or linked by URI."""

from __future__ import annotations

from dva.report.media import ReportFolder
from dva.storage import join, list_files, write_bytes_atomic


def test_a_remote_video_is_copied_into_a_local_report_only_when_small(s3_bucket, tmp_path):
    small, large = join(s3_bucket, "out", "small.mp4"), join(s3_bucket, "out", "large.mp4")
    write_bytes_atomic(small, b"s" * 1000)
    write_bytes_atomic(large, b"l" * 5000)
    folder = ReportFolder(str(tmp_path / "report"), copy_limit=4000)
    assert folder.link(small, "small.mp4") == "media/small.mp4"
    assert (tmp_path / "report" / "media" / "small.mp4").read_bytes() == b"s" * 1000
    assert folder.link(large, "large.mp4") == large
    assert list_files(str(tmp_path / "report")) == [str(tmp_path / "report" / "media" / "small.mp4")]
    assert [p.name for p in (tmp_path / "report" / "media").iterdir()] == ["small.mp4"]  # no temporary left
