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


class _Counting:
    """A landmarker that records the frames its detector ran on."""

    def __init__(self, landmarker):
        self.inner, self.detected_at, self.index = landmarker, [], -1

    def detect(self, frame):
        self.detected_at.append(self.index)
        return self.inner.detect(frame)

    def landmarks(self, frame, box):
        return self.inner.landmarks(frame, box)

    def frames(self, frames):
        for self.index, frame in enumerate(frames):
            yield frame


def _follow_cfg(k: int):
    return load_face_config("dlib", [f"track.detect_every={k}"]).track


def test_detector_runs_once_every_k_frames_and_the_followed_face_moves_with_the_face(sample_clip, dlib_landmarker):
    clip = sample_clip("astronaut", frames=24, motion=2.5)
    every_frame = track_faces(iter_frames(clip), dlib_landmarker, TRACK, name=clip)
    counting = _Counting(dlib_landmarker)
    followed = track_faces(counting.frames(iter_frames(clip)), counting, _follow_cfg(6), name=clip)
    assert counting.detected_at == [0, 6, 12, 18, 23]  # every 6th frame, and the last to confirm the followed end
    assert followed.detected_fraction == 1.0
    eyes = every_frame.points[:, 36:48].mean(axis=1)
    assert np.ptp(eyes[:, 0]) > 30  # the face moves: a box that stood still would lose it
    np.testing.assert_array_less(np.linalg.norm(followed.points[:, 36:48].mean(axis=1) - eyes, axis=1), 3.0)


def test_a_face_that_vanishes_between_detections_is_not_followed_onto_the_background(sample_clip, dlib_landmarker):
    clip = sample_clip("astronaut", frames=12, face_range=(4, 9))
    cfg = load_face_config("dlib", ["track.detect_every=4", "track.min_detected_fraction=0.3"]).track
    track = track_faces(iter_frames(clip), dlib_landmarker, cfg, name=clip)
    assert list(track.status) == [FrameStatus.HELD] * 4 + [FrameStatus.DETECTED] * 5 + [FrameStatus.HELD] * 3


class _Scripted:
    """A detector that always finds one face at x=100; landmarks follow the box, except on `jump_at` frames."""

    def __init__(self, jump_at):
        self.jump_at, self.detected_at, self.index = set(jump_at), [], -1

    def detect(self, frame):
        self.detected_at.append(int(frame[0, 0]))
        return [DetectedFace(box=np.array([80.0, 80, 120, 120]), points=self.landmarks(frame, [80, 80, 120, 120]),
                             score=1)]

    def landmarks(self, frame, box):
        shift = 60 if int(frame[0, 0]) in self.jump_at and int(frame[0, 0]) not in self.detected_at else 0
        centre = (np.asarray(box[:2]) + box[2:]) / 2 + shift
        return np.tile(centre, (68, 1)).astype(np.float32) + np.tile([[-20, -20], [20, 20]], (34, 1))


def test_a_lost_face_is_detected_again_at_once():
    frames = [np.full((4, 4), i) for i in range(10)]
    scripted = _Scripted(jump_at=[3])
    track = track_faces(frames, scripted, _follow_cfg(5), name="clip")
    assert scripted.detected_at == [0, 3, 8, 9]  # frame 3's landmarks jumped: the box lost the face
    assert track.detected_fraction == 1.0
    np.testing.assert_allclose(track.points[:, :, 0].mean(axis=1), 100)


@pytest.mark.parametrize("override, key", [
    ("track.detect_every=0", "track.detect_every"), ("track.follow_min_iou=1.5", "track.follow_min_iou"),
    ("fan.detect_max_side=10", "fan.detect_max_side")])
def test_tracking_keys_are_validated(override, key):
    from dva.errors import ConfigError

    with pytest.raises(ConfigError, match=f"`{key}`"):
        load_face_config("dlib", [override])


def test_a_front_end_on_cuda_needs_a_gpu_share_for_its_stage():
    from dva.errors import ConfigError
    from dva.pipeline.config import EditJobConfig
    from dva.runtime.config import load_job_config
    from dva.train.config import PreprocessJobConfig

    base = ["input=s3://b/in/", "output=s3://b/out/"]
    trained = [*base, "model.checkpoint=s3://b/dva256.safetensors"]  # the edit job's UNet weights
    edit = load_job_config(EditJobConfig, "cluster_gpu", trained)
    assert edit.face.track.detect_every > 1 and edit.face.fan.device == "cuda" and edit.frontend.num_gpus > 0
    with pytest.raises(ConfigError, match=r"`face\.fan\.device`.*frontend\.num_gpus"):
        load_job_config(EditJobConfig, "cluster_gpu", [*trained, "frontend.num_gpus=0"])
    assert load_job_config(EditJobConfig, "cluster_gpu", [*trained, "frontend.num_gpus=0", "face.fan.device=cpu"])
    with pytest.raises(ConfigError, match=r"`face\.fan\.device`.*frontend\.num_gpus"):
        load_job_config(PreprocessJobConfig, "cluster", [*base, "face.fan.device=cuda"], group="preprocess")
    with pytest.raises(ConfigError, match=r"`fan\.device`"):
        load_face_config("fan", ["fan.device=gpu"])
