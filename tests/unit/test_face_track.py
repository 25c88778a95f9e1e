"""One face track per video: choosing the face, filling missed frames, and failing clearly without a face."""

from __future__ import annotations

import numpy as np
import pytest

from dva.errors import NoFaceError
from dva.face import DetectedFace, FrameStatus, load_face_config, select_track, track_faces
from dva.face.track import fill_gaps
from dva.video import iter_frames

TRACK = load_face_config("dlib").track


def _face(x: float, y: float, size: float) -> DetectedFace:
    points = np.tile([x, y], (68, 1)).astype(np.float32)
    return DetectedFace(box=np.array([x - size / 2, y - size / 2, x + size / 2, y + size / 2]), points=points, score=1)


def test_fill_gaps_interpolates_inside_and_holds_at_the_ends():
    points = np.full((7, 68, 2), np.nan, np.float32)
    points[2], points[5] = 10.0, 40.0
    track = fill_gaps(points)
    np.testing.assert_allclose(track.points[:, 0, 0], [10, 10, 10, 20, 30, 40, 40])
    S = FrameStatus
    assert list(track.status) == [S.HELD, S.HELD, S.DETECTED, S.INTERPOLATED, S.INTERPOLATED, S.DETECTED, S.HELD]


def test_largest_face_starts_the_track_then_the_nearest_is_followed():
    big, small = _face(100, 100, 80), _face(300, 100, 40)
    detections = [[small, big], [_face(104, 102, 80), _face(300, 100, 90)], [_face(300, 100, 40)]]
    track = select_track(detections, TRACK, "clip.mp4")
    # frame 1: the bigger face at x=300 is far from the track; frame 2: only the far face -> missed, held
    np.testing.assert_allclose(track.points[:, 0, 0], [100, 104, 104])
    assert list(track.status) == [FrameStatus.DETECTED, FrameStatus.DETECTED, FrameStatus.HELD]


def test_largest_policy_takes_the_largest_in_every_frame():
    cfg = load_face_config("dlib", ["track.policy=largest"]).track
    detections = [[_face(100, 100, 80), _face(300, 100, 40)], [_face(104, 100, 70), _face(300, 100, 90)]]
    np.testing.assert_allclose(select_track(detections, cfg, "clip").points[:, 0, 0], [100, 300])


def test_too_few_detections_raise_no_face_error_naming_the_video():
    with pytest.raises(NoFaceError, match="clip.mp4: no face was detected in any of its 3 frames"):
        select_track([[], [], []], TRACK, "clip.mp4")
    with pytest.raises(NoFaceError, match=r"clip.mp4: a face was detected in only 1 of 3 frames \(33%\)"):
        select_track([[], [_face(1, 1, 1)], []], TRACK, "clip.mp4")


def test_face_only_in_the_middle_frames_is_held_at_the_ends(sample_clip, dlib_landmarker):
    clip = sample_clip("astronaut", frames=12, face_range=(4, 9))
    with pytest.raises(NoFaceError, match=r"only 5 of 12 frames"):
        track_faces(iter_frames(clip), dlib_landmarker, TRACK, name=clip)
    lenient = load_face_config("dlib", ["track.min_detected_fraction=0.3"]).track
    track = track_faces(iter_frames(clip), dlib_landmarker, lenient, name=clip)
    assert list(track.status) == [FrameStatus.HELD] * 4 + [FrameStatus.DETECTED] * 5 + [FrameStatus.HELD] * 3
    np.testing.assert_array_equal(track.points[0], track.points[4])


def test_two_faces_the_larger_is_tracked(sample_clip, dlib_landmarker):
    clip = sample_clip(("grace_hopper", "astronaut"), frames=6, size=(400, 300))
    frames = list(iter_frames(clip))
    assert len(dlib_landmarker.detect(frames[0])) == 2
    track = track_faces(frames, dlib_landmarker, TRACK, name=clip)
    assert track.detected_fraction == 1.0
    assert np.all(track.points[:, :, 0].mean(axis=1) < 200)  # Grace Hopper is the larger face, on the left
