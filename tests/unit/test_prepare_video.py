"""Stage A without Ray: the HELD frames (no face before the first or after the last detection) stay out of the
mean z_id and of the chunks stage B inverts; stored latents are trusted only as a whole set."""

from __future__ import annotations

import numpy as np
import pytest

from dva.face.landmarker import build_landmarker
from dva.face.track import FrameStatus
from dva.runtime.weights import load_model
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.latents import LatentKey, LatentStore
from dva.frontend import VideoTask, prepare_video


def test_held_frames_are_left_out_of_the_mean_z_id_and_the_chunks(sample_clip, tmp_path):
    cfg = load_job_config(EditJobConfig, "local_tiny", ["input=unused", "output=unused"])
    uri = sample_clip("astronaut", frames=8, face_range=(2, 7))  # frames 0, 1 and 7 show no face
    model = load_model(cfg.model, with_unet=False)
    seen = {}

    def resolve(task, z_id, track):
        seen["z_id"] = z_id
        return z_id[None]

    store = LatentStore(str(tmp_path), "video")
    rows = list(prepare_video(VideoTask(uri, "a.mp4", "video", ["reconstruct"]), cfg.face, build_landmarker(cfg.face),
                              model.encode_identity, model.encode_landmarks, resolve, store, LatentKey("m", 3, 2),
                              chunk_frames=2, reuse_latents=False))
    track = store.load_track()
    z_id_frames, _ = store.load_codes()
    detected = track.status == FrameStatus.DETECTED
    assert list(np.flatnonzero(track.status == FrameStatus.HELD)) == [0, 1, 7] and detected.sum() == 5
    assert np.allclose(seen["z_id"], z_id_frames[detected].mean(axis=0), atol=1e-6)
    assert not np.allclose(seen["z_id"], z_id_frames.mean(axis=0), atol=1e-3)
    # the UNet's work: 5 frames in 3 chunks of at most 2, starting at the first face
    assert [(r["chunk"], r["start"], len(r["crops"]), len(r["z_lnd"])) for r in rows] == [
        (0, 2, 2, 2), (1, 4, 2, 2), (2, 6, 1, 1)]
    assert {r["num_chunks"] for r in rows} == {3} and {r["num_frames"] for r in rows} == {8}


def test_a_crash_after_the_new_track_never_mixes_it_with_the_old_x_T(sample_clip, tmp_path, monkeypatch):
    cfg = load_job_config(EditJobConfig, "local_tiny", ["input=unused", "output=unused"])
    uri = sample_clip("astronaut", frames=4)
    model = load_model(cfg.model, with_unet=False)
    landmarker = build_landmarker(cfg.face)
    store, key = LatentStore(str(tmp_path), "video"), LatentKey("m", 3, 2)

    def prepare(face, reuse=True):
        return list(prepare_video(VideoTask(uri, "a.mp4", "video", ["reconstruct"]), face, landmarker,
                                  model.encode_identity, model.encode_landmarks, lambda t, z, tr: z[None], store,
                                  key, chunk_frames=2, reuse_latents=reuse))

    rows = prepare(cfg.face)
    for r in rows:  # what stage B and the driver do for a complete set
        store.save_x_T(r["chunk"], np.zeros((len(r["z_lnd"]), 3, 32, 32), np.float32))
    store.commit(key, 4, len(rows), uri, "")
    assert store.is_complete(key, "") and all(r["has_x_T"] is False for r in rows)
    assert all(r["has_x_T"] for r in prepare(cfg.face))  # reused as it is

    # A job with other face settings (or keeping no latents) writes a new track, then dies before the rest.
    other = load_job_config(EditJobConfig, "local_tiny", ["input=unused", "output=unused", "face.align.sigma_axes=0"])

    def crash(*args):
        raise OSError("killed")

    monkeypatch.setattr(LatentStore, "save_codes", crash)
    with pytest.raises(OSError, match="killed"):
        prepare(other.face, reuse=False)
    monkeypatch.undo()
    assert not store.is_complete(key, "")
    again = prepare(cfg.face)  # the old x_T is not trusted with the new track: the video is prepared afresh
    assert all(r["has_x_T"] is False and len(r["crops"]) for r in again)
