"""`crop_video` / `dva face-crop` end to end, and the full edit path's output: crop -> paste -> encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dva.cli import main
from dva.runtime.cli import EXIT_USAGE
from dva.errors import NoFaceError
from dva.face import AlignedTrack, FrameStatus, face_mask, paste_face
from dva.face.crop_video import crop_video
from dva.video import VideoWriter, iter_frames, probe


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_crop_video_then_paste_back_keeps_frames_rate_duration_and_audio(sample_clip, tmp_path, face_cfg,
                                                                          dlib_landmarker):
    src = sample_clip("astronaut", frames=16, fps=25, audio=True, blinks=True)
    result = crop_video(src, str(tmp_path / "crops"), face_cfg, landmarker=dlib_landmarker, progress=False)
    crops_info = probe(result.video)
    assert (crops_info.num_frames, crops_info.fps, crops_info.size) == (16, 25, (256, 256))
    record = AlignedTrack.load(result.track)
    assert record.quads.shape == (16, 4, 2) and record.points.shape == (16, 68, 2)
    assert record.frame_size == (320, 240) and record.fps == 25 and record.source == src
    assert result.detected_fraction == 1.0 and (record.status == FrameStatus.DETECTED).all()
    stem = Path(src).stem
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == [f"{stem}.crop.mp4", f"{stem}.track.npz"]

    # The edit path with an identity edit: the H.264 crops pasted back into the source frames.
    out = str(tmp_path / "edited.mp4")
    source = probe(src)
    with VideoWriter(out, source.fps, audio_from=src) as writer:
        for index, (frame, crop) in enumerate(zip(iter_frames(src), iter_frames(result.video))):
            mask = face_mask(crop, record.crop_points(index), face_cfg.mask)
            pasted = paste_face(frame, crop, record.quads[index], mask, face_cfg.mask)
            assert _psnr(pasted, frame) > 38  # whole frame, face included
            writer.write(pasted)
    edited = probe(out)
    assert abs(edited.num_frames - source.num_frames) <= 1 and edited.fps == source.fps
    assert abs(edited.duration - source.duration) <= 1 / float(source.fps)
    assert edited.has_audio and edited.size == source.size


def test_no_face_fails_and_writes_nothing(sample_clip, tmp_path, face_cfg, dlib_landmarker):
    src = sample_clip("astronaut", frames=6, face_range=(0, 0))
    with pytest.raises(NoFaceError, match="no face was detected in any of its 6 frames"):
        crop_video(src, str(tmp_path / "out"), face_cfg, landmarker=dlib_landmarker, progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "kwargs, frame_size",
    [(dict(frames=1), (320, 240)), (dict(frames=4, size=(333, 197)), (334, 198)),
     (dict(frames=4, size=(180, 320), rotation=90), (180, 320))],
    ids=["one-frame", "odd-size", "portrait-rotated"],
)
def test_unusual_videos_crop(sample_clip, tmp_path, face_cfg, dlib_landmarker, kwargs, frame_size):
    src = sample_clip("grace_hopper", **kwargs)
    result = crop_video(src, str(tmp_path), face_cfg, landmarker=dlib_landmarker, progress=False)
    record = AlignedTrack.load(result.track)
    assert record.frame_size == frame_size and len(record) == kwargs["frames"]
    assert probe(result.video).num_frames == kwargs["frames"]
    centre = record.quads.mean(axis=1)
    assert np.all((centre > 0) & (centre < frame_size))  # the face was found inside the upright frame


def test_cli(sample_clip, tmp_path, capsys):
    src = sample_clip("grace_hopper", frames=4)
    assert main(["face-crop", src, str(tmp_path / "out"), "--config", "dlib", "align.crop_size=128"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert probe(printed[0]).size == (128, 128) and AlignedTrack.load(printed[1]).crop_size == 128
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert main(["face-crop", str(empty), str(tmp_path / "out2")]) == EXIT_USAGE  # was 1 before the common CLI
    assert "empty (0 bytes)" in capsys.readouterr().err
    assert main(["face-crop", src, str(tmp_path / "out3"), "align.sigmax=1"]) == EXIT_USAGE
    assert "align.sigmax" in capsys.readouterr().err
