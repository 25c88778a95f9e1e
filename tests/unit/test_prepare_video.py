"""Stage A without Ray: the HELD frames (no face before the first or after the last detection) stay out of the
mean z_id and of the chunks stage B inverts; stored latents are trusted only as a whole set."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dva.face.landmarker import build_landmarker
from dva.face.track import FrameStatus
from dva.runtime.weights import load_model
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.latents import LatentKey, LatentStore, read_tracks_summary
from dva.crops import crops_to_tensor
from dva.face.crop_video import align_video
from dva.face.warp import iter_crops
from dva import frontend
from dva.frontend import VideoTask, encode_face_codes, find_faces, prepare_video
from dva.video import iter_frames
from dva.video.decode import stack_chunks

UNUSED_PATHS = ["random_weights=true", "input=unused", "output=unused"]  # stage A runs no UNet


class EveryFace:
    """The edit plan of these tests: every edit addresses every face and decodes with the face's own mean z_id."""

    def __init__(self):
        self.seen = {}

    def faces(self, task, tracks, z_ids):
        return {edit: list(range(len(tracks))) for edit in task.edits}

    def __call__(self, task, z_id, track):
        self.seen[task.face] = z_id
        return z_id[None]


def test_held_frames_are_left_out_of_the_mean_z_id_and_the_chunks(sample_clip, tmp_path):
    cfg = load_job_config(EditJobConfig, "local_tiny", UNUSED_PATHS)
    uri = sample_clip("astronaut", frames=8, face_range=(2, 7))  # frames 0, 1 and 7 show no face
    model = load_model(cfg.model, with_unet=False)
    plan = EveryFace()
    store = LatentStore(str(tmp_path), "video")
    rows = list(prepare_video(VideoTask(uri, "a.mp4", "video", ["reconstruct"]), cfg.face, build_landmarker(cfg.face),
                              model.encode_identity, model.encode_landmarks, plan, store, LatentKey("m", 3, 2),
                              chunk_frames=2, reuse_latents=False))
    assert store.num_tracks() == 1
    track = store.load_track(0)
    z_id_frames, z_lnd = store.load_codes(0)
    detected = track.status == FrameStatus.DETECTED
    assert list(np.flatnonzero(track.status == FrameStatus.HELD)) == [0, 1, 7] and detected.sum() == 5
    assert len(z_id_frames) == len(z_lnd) == 5  # only the frames with the face are encoded
    assert np.allclose(plan.seen[0], z_id_frames.mean(axis=0), atol=1e-6)
    # the UNet's work: 5 frames in 3 chunks of at most 2, starting at the first face
    assert [(r["chunk"], r["start"], len(r["crops"]), len(r["z_lnd"])) for r in rows] == [
        (0, 2, 2, 2), (1, 4, 2, 2), (2, 6, 1, 1)]
    assert {r["num_chunks"] for r in rows} == {3} and {r["num_frames"] for r in rows} == {8}


def test_a_crash_after_the_new_track_never_mixes_it_with_the_old_x_T(sample_clip, tmp_path, monkeypatch):
    cfg = load_job_config(EditJobConfig, "local_tiny", UNUSED_PATHS)
    uri = sample_clip("astronaut", frames=4)
    model = load_model(cfg.model, with_unet=False)
    landmarker = build_landmarker(cfg.face)
    store, key = LatentStore(str(tmp_path), "video"), LatentKey("m", 3, 2)

    def prepare(face, reuse=True):
        return list(prepare_video(VideoTask(uri, "a.mp4", "video", ["reconstruct"]), face, landmarker,
                                  model.encode_identity, model.encode_landmarks, EveryFace(), store,
                                  key, chunk_frames=2, reuse_latents=reuse))

    rows = prepare(cfg.face)
    for r in rows:  # what stage B and the driver do for a complete set
        store.save_x_T(r["face"], r["chunk"], np.zeros((len(r["z_lnd"]), 3, 32, 32), np.float32))
    store.commit_x_T(0, key, len(rows), "")
    assert store.is_complete(key, "") and all(r["has_x_T"] is False for r in rows)
    assert all(r["has_x_T"] for r in prepare(cfg.face))  # reused as it is

    # A job with other face settings (or keeping no latents) writes a new track, then dies before the rest.
    other = load_job_config(EditJobConfig, "local_tiny", [*UNUSED_PATHS, "face.align.sigma_axes=0"])

    def crash(*args):
        raise OSError("killed")

    monkeypatch.setattr(LatentStore, "commit_tracks", crash)
    with pytest.raises(OSError, match="killed"):
        prepare(other.face, reuse=False)
    monkeypatch.undo()
    assert not store.is_complete(key, "")
    again = prepare(cfg.face)  # the old x_T is not trusted with the new track: the video is prepared afresh
    assert all(r["has_x_T"] is False and len(r["crops"]) for r in again)


def test_each_person_is_its_own_track_over_their_own_frames(sample_clip, tmp_path):
    """Two people, the second entering halfway: two tracks with their own frame ranges, mean z_id and chunks; an
    edit that addresses one face makes chunks of that face only."""
    cfg = load_job_config(EditJobConfig, "local_tiny", UNUSED_PATHS)
    uri = sample_clip(("astronaut", "grace_hopper"), frames=12, size=(480, 360), face_range=[None, (6, 12)])
    model = load_model(cfg.model, with_unet=False)
    landmarker = build_landmarker(cfg.face)
    store = LatentStore(str(tmp_path), "video")

    class SecondFaceOnly(EveryFace):
        def faces(self, task, tracks, z_ids):
            return {edit: [1] for edit in task.edits}

    plans = {"all": EveryFace(), "second": SecondFaceOnly()}
    rows = {name: list(prepare_video(VideoTask(uri, "a.mp4", "video", ["reconstruct"]), cfg.face, landmarker,
                                     model.encode_identity, model.encode_landmarks, plan, store,
                                     LatentKey("m", 3, 4), chunk_frames=4, reuse_latents=True))
            for name, plan in plans.items()}
    tracks = store.load_tracks()
    assert [t.face_frames for t in tracks] == [range(0, 12), range(6, 12)]
    assert tracks[0].face_size > tracks[1].face_size  # the first person is drawn larger
    assert store.tracks_summary_uri.endswith("tracks.json")
    summary = read_tracks_summary(str(tmp_path), "video")
    assert [(t["first"], t["last"]) for t in summary["tracks"]] == [(0, 11), (6, 11)]
    assert summary["identity_distance"][0][0] == 0 and summary["identity_distance"][0][1] > 0
    for face in (0, 1):
        z_id_frames, z_lnd = store.load_codes(face)
        assert len(z_id_frames) == len(z_lnd) == len(tracks[face].face_frames)
        assert np.allclose(plans["all"].seen[face], z_id_frames.mean(axis=0), atol=1e-6)
    assert not np.allclose(plans["all"].seen[0], plans["all"].seen[1], atol=1e-3)
    # every face: chunks of 4 frames from each face's first frame (0-3, 4-7, 8-11 and 6-9, 10-11)
    assert sorted((r["face"], r["chunk"], r["start"], len(r["crops"])) for r in rows["all"]) == [
        (0, 0, 0, 4), (0, 1, 4, 4), (0, 2, 8, 4), (1, 0, 6, 4), (1, 1, 10, 2)]
    assert {r["pair_chunks"] for r in rows["all"]} == {'{"reconstruct": 5}'}
    # the second face only: its chunks alone (the stored tracks were reused, not found again)
    assert [(r["face"], r["start"]) for r in rows["second"]] == [(1, 6), (1, 10)]
    assert {r["pair_chunks"] for r in rows["second"]} == {'{"reconstruct": 2}'}


def test_a_tracks_codes_are_those_of_the_whole_video_encoded_in_chunks(sample_clip):
    """Pass 2 encodes a track's face frames in the batches a whole-video encode would use (filled with its HELD
    crops), so a one-face video's codes, and with them its x_T and output bytes, do not change with the track's
    span (z_id differed in its last bits with batches that started at the first face frame)."""
    cfg = load_job_config(EditJobConfig, "local_tiny", UNUSED_PATHS)
    uri = sample_clip("astronaut", frames=12, face_range=(3, 10))
    model = load_model(cfg.model, with_unet=False)
    track = align_video(uri, build_landmarker(cfg.face), cfg.face)
    assert track.face_frames == range(3, 10)
    [(z_id, z_lnd)] = encode_face_codes(uri, [track], model.encode_identity, model.encode_landmarks, chunk_frames=4)
    batches = [crops_to_tensor(b) for b in stack_chunks(iter_crops(iter_frames(uri), track.quads, track.crop_size), 4)]
    whole_id = np.concatenate([model.encode_identity(b).numpy() for b in batches])
    whole_lnd = np.concatenate([model.encode_landmarks(b).numpy() for b in batches])
    assert np.array_equal(z_id, whole_id[3:10]) and np.array_equal(z_lnd, whole_lnd[3:10])


def test_a_person_who_leaves_and_comes_back_is_joined_again_by_identity(sample_clip, monkeypatch):
    """Two tracks of one person split by an absence longer than `track.max_gap` (here: the one track of a clip cut
    in two at frames 5-7) become one track again, since their mean z_id match; it is encoded again as a whole."""
    cfg = load_job_config(EditJobConfig, "local_tiny", UNUSED_PATHS)
    uri = sample_clip("astronaut", frames=12)
    model = load_model(cfg.model, with_unet=False)
    whole = align_video(uri, build_landmarker(cfg.face), cfg.face)
    before, after = (dataclasses.replace(whole, status=whole.status.copy()) for _ in range(2))
    before.status[5:] = FrameStatus.HELD
    after.status[:8] = FrameStatus.HELD
    monkeypatch.setattr(frontend, "align_video_faces", lambda *args: [before, after])
    task = VideoTask(uri, "a.mp4", "video", [])
    tracks, codes = find_faces(task, cfg.face, None, model.encode_identity, model.encode_landmarks, chunk_frames=4)
    assert len(tracks) == 1 and tracks[0].face_frames == range(12)
    assert list(np.flatnonzero(tracks[0].status == FrameStatus.INTERPOLATED)) == [5, 6, 7]
    assert len(codes[0][0]) == 12
    monkeypatch.setattr(cfg.face.track, "reassociate_min_cosine", 1.0)  # nobody is that alike: two people
    tracks, codes = find_faces(task, cfg.face, None, model.encode_identity, model.encode_landmarks, chunk_frames=4)
    assert [t.face_frames for t in tracks] == [range(0, 5), range(8, 12)] and [len(c[0]) for c in codes] == [5, 4]


def test_a_face_seen_in_a_third_of_the_clip_is_edited_where_it_is_seen(sample_clip, tmp_path):
    """`track.min_detected_fraction` (0.5) applies to a track's own span: a face in 4 of 12 frames is one track over
    those 4 frames (the whole video failed with NoFaceError when the fraction counted every frame)."""
    cfg = load_job_config(EditJobConfig, "local_tiny", UNUSED_PATHS)
    uri = sample_clip("astronaut", frames=12, face_range=(8, 12))
    model = load_model(cfg.model, with_unet=False)
    store = LatentStore(str(tmp_path), "video")
    rows = list(prepare_video(VideoTask(uri, "a.mp4", "video", ["reconstruct"]), cfg.face, build_landmarker(cfg.face),
                              model.encode_identity, model.encode_landmarks, EveryFace(), store, LatentKey("m", 3, 4),
                              chunk_frames=4, reuse_latents=False))
    assert store.load_track(0).face_frames == range(8, 12)
    assert [(r["face"], r["start"], len(r["crops"])) for r in rows] == [(0, 8, 4)]
