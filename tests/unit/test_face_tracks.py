"""Several faces per video (dva.face.tracks): one track per person, each with its own span."""

from __future__ import annotations

import numpy as np
import pytest

from dva.errors import NoFaceError
from dva.face import DetectedFace, FrameStatus, select_track
from dva.face.track import seen_frames
from dva.face.tracks import associate, face_tracks, merge_by_identity
from tests.unit.test_face_track import TRACK

S = FrameStatus
SETTINGS = dict(max_jump=0.5, max_gap=5, min_detected_fraction=0.5)


def _face(x: float, y: float, size: float) -> DetectedFace:
    points = np.tile([x, y], (68, 1)).astype(np.float32)
    return DetectedFace(box=np.array([x - size / 2, y - size / 2, x + size / 2, y + size / 2]), points=points, score=1)


def test_a_second_person_entering_halfway_gets_their_own_track_and_span():
    detections = [[_face(100 + t, 100, 80)] + ([_face(400 - t, 120, 60)] if t >= 30 else []) for t in range(60)]
    first, second = face_tracks(detections, "two.mp4", **SETTINGS)
    assert seen_frames(first.status) == range(0, 60) and seen_frames(second.status) == range(30, 60)
    assert (second.status[:30] == S.HELD).all() and (second.status[30:] == S.DETECTED).all()
    np.testing.assert_allclose(first.points[:, 0, 0], 100 + np.arange(60))
    np.testing.assert_allclose(second.points[30:, 0, 0], 400 - np.arange(30, 60))


def test_the_detected_fraction_is_that_of_the_tracks_own_span():
    # visible in frames 40..59 only (a third of the clip), detected in 15 of those 20
    detections = [[_face(200, 200, 70)] if t >= 40 and t % 4 else [] for t in range(60)]
    (track,) = face_tracks(detections, "late.mp4", **SETTINGS)
    assert seen_frames(track.status) == range(41, 59 + 1)
    with pytest.raises(NoFaceError, match="late.mp4"):
        face_tracks(detections, "late.mp4", **{**SETTINGS, "min_detected_fraction": 0.9})


def test_nearby_faces_keep_their_identity_when_they_move_towards_each_other():
    # two faces 120 px apart close in to 40 px; listed in alternating order so order cannot carry identity
    detections = []
    for t in range(20):
        a, b = _face(100 + 2 * t, 100, 60), _face(220 - 2 * t, 100, 60)
        detections.append([a, b] if t % 2 else [b, a])
    left, right = face_tracks(detections, "pair.mp4", **SETTINGS)
    np.testing.assert_allclose(left.points[:, 0, 0], 100 + 2 * np.arange(20))
    np.testing.assert_allclose(right.points[:, 0, 0], 220 - 2 * np.arange(20))


def test_small_faces_and_single_spurious_detections_are_dropped():
    detections = [[_face(100, 100, 80), _face(500, 500, 10)] for _ in range(10)]
    detections[4].append(_face(300, 300, 80))  # one frame only
    tracks = face_tracks(detections, "clip.mp4", **SETTINGS, min_face_size=20)
    assert len(tracks) == 1 and (tracks[0].status == S.DETECTED).all()
    assert len(associate(detections, max_jump=0.5, max_gap=5)) == 3  # without the filters: 3 tracks


def test_a_face_missed_for_up_to_max_gap_frames_stays_one_track_longer_gaps_split_it():
    short = [[] if 10 <= t < 14 else [_face(100, 100, 80)] for t in range(30)]
    (track,) = face_tracks(short, "clip.mp4", **SETTINGS)
    assert (track.status[10:14] == S.INTERPOLATED).all()
    long = [[] if 10 <= t < 20 else [_face(100, 100, 80)] for t in range(30)]
    assert [seen_frames(t.status) for t in face_tracks(long, "clip.mp4", **SETTINGS)] == [range(0, 10), range(20, 30)]


def test_merge_by_identity_joins_one_person_across_an_occlusion_but_not_two_people():
    long = [[] if 10 <= t < 20 else [_face(100, 100, 80)] for t in range(30)]
    before, after = face_tracks(long, "clip.mp4", **SETTINGS)
    same = np.array([[1.0, 0.1], [0.95, 0.12]])
    ((merged, parts),) = merge_by_identity([before, after], same, max_gap=12, min_cosine=0.9)
    assert parts == [0, 1] and seen_frames(merged.status) == range(0, 30)
    assert (merged.status[10:20] == S.INTERPOLATED).all()
    other = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert [p for _, p in merge_by_identity([before, after], other, max_gap=12, min_cosine=0.9)] == [[0], [1]]
    assert len(merge_by_identity([before, after], same, max_gap=5, min_cosine=0.9)) == 2  # the gap is 10 frames


def test_tracks_that_overlap_in_time_are_never_merged():
    detections = [[_face(100, 100, 80), _face(400, 100, 80)] for _ in range(10)]
    tracks = face_tracks(detections, "clip.mp4", **SETTINGS)
    assert len(merge_by_identity(tracks, np.ones((2, 4)), max_gap=100, min_cosine=0.0)) == 2


def test_one_face_gives_the_single_track_of_dva_face_track():
    rng = np.random.default_rng(0)
    detections = [[_face(100 + x, 100 + y, 80)] if t % 7 else [] for t, (x, y) in enumerate(rng.normal(0, 3, (40, 2)))]
    (track,) = face_tracks(detections, "clip.mp4", **SETTINGS)
    single = select_track(detections, TRACK, "clip.mp4")
    np.testing.assert_array_equal(track.points, single.points)
    np.testing.assert_array_equal(track.status, single.status)


def test_no_face_names_the_video():
    with pytest.raises(NoFaceError, match="empty.mp4"):
        face_tracks([[], [], []], "empty.mp4", **SETTINGS)
