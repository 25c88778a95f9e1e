"""Sample clips: what they promise (frames, rate, size, motion, blinks, audio) and that they stay deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from dva.samples import PORTRAITS, close_eyes, load_photo, make_sample_clip, render_frame, write_sample_set
from dva.video import iter_frames, probe


def test_clip_has_the_requested_shape_and_moves(sample_clip):
    clip = sample_clip("grace_hopper", frames=8)
    info = probe(clip)
    assert (info.num_frames, info.fps, info.size, info.has_audio) == (8, 25, (320, 240), False)
    frames = list(iter_frames(clip))
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 5


def test_rendering_is_deterministic_and_motion_zero_keeps_the_head_still():
    kwargs = dict(duration=1.0, seed=3)
    a = render_frame(["astronaut"], (160, 120), 0.3, **kwargs)
    np.testing.assert_array_equal(a, render_frame(["astronaut"], (160, 120), 0.3, **kwargs))
    still = [render_frame(["astronaut"], (160, 120), t, motion=0.0, **kwargs) for t in (0.0, 0.5)]
    centre = (slice(45, 75), slice(65, 95))  # inside the face
    assert np.abs(still[0][centre].astype(int) - still[1][centre]).max() <= 1
    moving = [render_frame(["astronaut"], (160, 120), t, **kwargs) for t in (0.0, 0.5)]
    assert np.abs(moving[0][centre].astype(int) - moving[1][centre]).mean() > 5


@pytest.mark.parametrize("person", sorted(PORTRAITS))
def test_blinks_change_only_the_eyes(person):
    photo, portrait = load_photo(person), PORTRAITS[person]
    shut = close_eyes(photo, portrait, 1.0)
    changed = np.abs(shut.astype(int) - photo).sum(axis=2) > 0
    ys, xs = np.nonzero(changed)
    eyes = np.array(portrait.eyes)
    assert changed.sum() > 0
    assert xs.min() >= eyes[:, 0].min() - portrait.eye_width and xs.max() <= eyes[:, 0].max() + portrait.eye_width
    assert ys.min() >= eyes[:, 1].min() - 3 * portrait.eye_opening
    assert ys.max() <= eyes[:, 1].max() + 3 * portrait.eye_opening
    np.testing.assert_array_equal(close_eyes(photo, portrait, 0.0), photo)


def test_sample_set_and_bad_arguments(tmp_path):
    paths = write_sample_set(tmp_path, frames=3, size=(160, 120))
    assert len(paths) == 4 and all(probe(p).num_frames == 3 for p in paths)
    assert probe(paths[0]).has_audio and probe(paths[2]).rotation == 90
    with pytest.raises(ValueError, match="unknown sample person"):
        make_sample_clip(tmp_path / "x.mp4", "mona_lisa")
    with pytest.raises(ValueError, match="multiple of 90"):
        make_sample_clip(tmp_path / "x.mp4", rotation=45)


def test_a_second_person_enters_halfway_without_moving_the_first(sample_clip, dlib_landmarker):
    # 480x360: the second face is 0.75x smaller (~120 px), well above dlib HOG's 80 px window; at 320x240 it is ~80 px.
    clip = sample_clip(("astronaut", "grace_hopper"), frames=48, size=(480, 360), face_range=[None, (24, 48)])
    faces = [dlib_landmarker.detect(frame) for frame in iter_frames(clip)]
    assert [len(found) for found in faces] == [1] * 24 + [2] * 24
    left = [min(found, key=lambda face: face.centre[0]) for found in faces]
    assert all(face.centre[0] < 240 for face in left)
    assert np.abs(left[24].centre - left[23].centre).max() < 10  # head motion only: no jump when the other enters
    assert all(max(face.centre[0] for face in found) > 300 for found in faces[24:])


def test_per_person_face_ranges_must_match_the_people(tmp_path):
    with pytest.raises(ValueError, match="2 ranges for 1 person"):
        make_sample_clip(tmp_path / "x.mp4", "astronaut", frames=2, face_range=[None, (0, 1)])
