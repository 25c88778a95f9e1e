"""Several faces per video (dva.face.tracks): one track per person, each with its own span."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from dva.errors import NoFaceError
from dva.face import DetectedFace, FrameStatus, load_face_config, select_track, track_faces
from dva.face.track import seen_frames
from dva.face.tracks import associate, face_tracks, merge_by_identity, track_every_face
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


PATTERN = np.random.default_rng(0).uniform(-0.4, 0.4, (68, 2))  # a face's 68 points, in units of its size


def _points(x: float, y: float, size: float) -> np.ndarray:
    return (np.array([x, y]) + PATTERN * size).astype(np.float32)


class _Scene:
    """A fake landmarker over numbered frames, `faces(t)` being the (x, y, size) of each face in frame t.

    The detector finds them all (none on `missed` frames). The landmark model finds the face whose centre is in the
    box, shifted 60 px on `jump_at` frames (the box loses it); on background it returns a face filling the box, as a
    real model does. Every call checks that the frames stream: the frame is the newest produced, and at most two
    frames are alive."""

    def __init__(self, faces, missed=(), jump_at=()):
        self.faces, self.missed, self.jump_at = faces, set(missed), set(jump_at)
        self.detected_at: list[int] = []
        self.produced: list[weakref.ref] = []

    def frames(self, n: int):
        for t in range(n):
            frame = np.full((2, 2), t)
            self.produced.append(weakref.ref(frame))
            yield frame

    def _index(self, frame: np.ndarray) -> int:
        t = int(frame[0, 0])
        assert t == len(self.produced) - 1, "frames were read ahead of the one being processed"
        assert sum(ref() is not None for ref in self.produced) <= 2, "frames were kept"
        return t

    def detect(self, frame):
        t = self._index(frame)
        self.detected_at.append(t)
        return [] if t in self.missed else [
            DetectedFace(box=np.array([x - s / 2, y - s / 2, x + s / 2, y + s / 2]), points=_points(x, y, s), score=1)
            for x, y, s in self.faces(t)]

    def landmarks(self, frame, box):
        t = self._index(frame)
        centre, size = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
        for x, y, s in self.faces(t):
            if (np.abs(np.array([x, y]) - centre) < size / 2).all():
                return _points(x + (60 if t in self.jump_at else 0), y, s)
        return _points(*centre, size.mean())


def _cfg(k: int, *overrides: str):
    return load_face_config("dlib", [f"track.detect_every={k}", *overrides]).track


@pytest.mark.parametrize("k, enters_seen, detected_at", [
    (1, 32, list(range(60))),
    (5, 35, [0, 5, 10, 15, 20, 25, 30, 35, 40, 43, 48, 53, 58, 59])])  # 43: B's followed box lost it; 59: the end
def test_every_face_a_second_person_entering_halfway(k, enters_seen, detected_at):
    scene = _Scene(lambda t: [(100 + t, 100, 80)] + ([(400 - t, 120, 60)] if t >= 32 else []), jump_at=[43])
    first, second = track_every_face(scene.frames(60), scene, _cfg(k), "two.mp4")
    assert scene.detected_at == detected_at
    assert seen_frames(first.status) == range(0, 60) and (first.status == S.DETECTED).all()
    assert seen_frames(second.status) == range(enters_seen, 60) and (second.status[enters_seen:] == S.DETECTED).all()
    np.testing.assert_allclose(first.points[:, 0], [_points(100 + t, 100, 80)[0] for t in range(60)], atol=1e-4)
    np.testing.assert_allclose(second.points[enters_seen:, 0],
                               [_points(400 - t, 120, 60)[0] for t in range(enters_seen, 60)], atol=1e-4)


def test_a_face_that_leaves_between_detections_is_not_followed_onto_the_background():
    # B leaves at frame 23, between the detections at 20 and 25: frames 21-24 were followed, 23-24 on background
    scene = _Scene(lambda t: [(100 + t, 100, 80)] + ([(400, 300, 60)] if t < 23 else []))
    stays, leaves = track_every_face(scene.frames(40), scene, _cfg(5), "clip.mp4")
    assert (stays.status == S.DETECTED).all()
    assert seen_frames(leaves.status) == range(0, 21) and (leaves.status[21:] == S.HELD).all()


@pytest.mark.parametrize("k", [1, 5])
def test_one_face_gives_the_track_of_track_faces(k):
    jitter = np.random.default_rng(1).normal(0, 2, (40, 2))

    def scene():
        return _Scene(lambda t: [(100 + 2 * t + jitter[t, 0], 100 + jitter[t, 1], 80)], missed=[10, 11, 22],
                      jump_at=[33])

    every, single = scene(), scene()
    (track,) = track_every_face(every.frames(40), every, _cfg(k), "clip.mp4")
    expected = track_faces(single.frames(40), single, _cfg(k), "clip.mp4")
    assert every.detected_at == single.detected_at
    assert (k == 1) or 0 < len(every.detected_at) < 20  # followed between detections
    assert 0 < (expected.status != S.DETECTED).sum() < 20  # misses to fill
    np.testing.assert_array_equal(track.points, expected.points)
    np.testing.assert_array_equal(track.status, expected.status)


@pytest.mark.parametrize("k", [1, 5])
def test_faces_smaller_than_min_face_size_are_ignored(k):
    scene = _Scene(lambda t: [(100 + t, 100, 80), (300, 300, 20)])
    (track,) = track_every_face(scene.frames(20), scene, _cfg(k), "clip.mp4")
    assert (track.status == S.DETECTED).all() and abs(track.points[0, :, 0].mean() - 100) < 5
    scene = _Scene(lambda t: [(100 + t, 100, 80), (300, 300, 20)])
    assert len(track_every_face(scene.frames(20), scene, _cfg(k, "track.min_face_size=10"), "clip.mp4")) == 2


@pytest.mark.parametrize("k", [1, 5])
def test_frames_stream_through_one_at_a_time(k):
    scene = _Scene(lambda t: [(100, 100, 80), (300, 100, 80)])
    frames = scene.frames(30)
    tracks = track_every_face(frames, scene, _cfg(k), "clip.mp4")  # _Scene fails on a frame read ahead or kept
    assert len(tracks) == 2 and len(scene.produced) == 30 and next(frames, None) is None


@pytest.mark.parametrize("override", ["track.max_gap=0", "track.min_face_size=-1", "track.min_hits=0",
                                      "track.reassociate_max_gap=-1", "track.reassociate_min_cosine=1.5"])
def test_every_face_keys_are_validated(override):
    from dva.errors import ConfigError

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"`{key}`"):
        load_face_config("dlib", [override])
