"""The face front end, with no Ray: video → every face track → aligned crops → z_id (mean) and z_lnd → chunks.

It is stage A of the edit job and the encoder of preprocessing and evaluation.

A video is decoded three times and never held whole: pass 1 keeps landmarks only (tracking and smoothing need the
whole video), pass 2 keeps one z_id and z_lnd per frame of each track (each person's mean z_id is needed before
any inversion), pass 3 crops again and emits chunks of `chunk_frames` consecutive crops of one track. Each person
(track) is encoded, inverted and edited on their own, only over their own frames (`AlignedTrack.face_frames`).
Between passes 2 and 3 the caller's `EditPlan` says which tracks each edit addresses and turns the edit specs into
z_id per track. When a track's latents are stored for this model and N, its chunks carry no crops: stage B loads
x_T instead; a video whose addressed tracks all have stored x_T is not decoded at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from itertools import islice
from typing import Iterator, Optional, Protocol, Sequence

import numpy as np
import torch

from dva.crops import crops_to_tensor
from dva.errors import VideoError
from dva.face.config import FaceConfig
from dva.face.align import track_quads
from dva.face.crop_video import align_video_faces
from dva.face.landmarker import FaceLandmarker
from dva.face.mask import landmark_hull_mask
from dva.face.record import AlignedTrack
from dva.face.track import FrameStatus
from dva.face.tracks import identity_distances, merge_by_identity
from dva.face.warp import crop_face
from dva.latents import LatentKey, LatentStore
from dva.video import iter_frames


@dataclass
class VideoTask:
    uri: str
    key: str  # output key relative to the output prefix
    video_id: str
    edits: list[str]  # edit specs still to do for this video (empty: encode only)
    source: str = ""  # `dva.storage.file_stamp` of the video when the job started: stored latents must match it
    face: int = 0  # the track an edit of this task applies to (`EditPlan.__call__`)


class EditPlan(Protocol):
    """What the job does with a video's faces; `dva.pipeline.edit_resolution.EditResolver` is the job's."""

    def faces(self, task: VideoTask, tracks: Sequence[AlignedTrack], z_ids: np.ndarray) -> dict[str, list[int]]:
        """The tracks each of `task.edits` addresses, given every track and its mean z_id [T, D]."""

    def __call__(self, task: VideoTask, z_id: np.ndarray, track: AlignedTrack) -> np.ndarray:
        """The z_id [K, D] to decode track `task.face` with for each of `task.edits`, from its mean z_id [D]."""


def training_masks(model, track: AlignedTrack, images: torch.Tensor, start: int, brow_lift: float) -> np.ndarray:
    """L_reg masks [n, S, S] bool of the crops of frames start…: the face parser's training mask when the model has
    one (`model.face_parser`), else the landmark hull of the track's points."""
    if model.face_parser is not None:
        return model.face_parser(images).cpu().numpy().astype(bool)
    size = images.shape[-1]
    return np.stack([landmark_hull_mask(track.crop_points(start + i), size, brow_lift)
                     for i in range(images.shape[0])])


def iter_face_chunks(uri: str, tracks: Sequence[AlignedTrack], spans: dict[int, range], chunk_frames: int,
                     aligned: bool = False) -> Iterator[tuple[int, int, np.ndarray]]:
    """(face, first frame, crops [n, S, S, 3]) of the frames `spans[face]` of each track in `spans`, in one decode
    of the video, as each chunk fills: chunks of `chunk_frames` frames from the first frame of each span on, or
    (`aligned`) ending at every multiple of `chunk_frames`, as the batches of a whole video decoded in chunks end."""
    last = max((span.stop for span in spans.values()), default=0)
    pending: dict[int, list[np.ndarray]] = {face: [] for face in spans}
    decoded = 0
    with contextlib.closing(iter_frames(uri)) as frames:
        for index, frame in enumerate(islice(frames, last)):
            decoded += 1
            for face, span in spans.items():
                if index not in span:
                    continue
                track = tracks[face]
                pending[face].append(crop_face(frame, track.quads[index], track.crop_size))
                full = (index + 1) % chunk_frames == 0 if aligned else len(pending[face]) == chunk_frames
                if full or index + 1 == span.stop:
                    yield face, index + 1 - len(pending[face]), np.stack(pending[face])
                    pending[face] = []
    if decoded < last:
        raise VideoError(f"{uri}: decoded {decoded} frames, but its face tracks need {last}; was the file replaced?")


def encode_face_codes(uri: str, tracks: Sequence[AlignedTrack], encode_identity, encode_landmarks,
                      chunk_frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pass 2: z_id and z_lnd of every face frame of each track, in one decode.

    The encoders see the frames in batches of `chunk_frames` that start at multiples of it, as if the whole video
    were encoded: a batch that holds a track's first or last face frame is filled with the track's (HELD) crops
    around it, whose codes are dropped. So each frame's codes never depend on where a track starts, ends, or which
    other tracks exist (kernels round by batch shape): a one-face video gets the codes it always got."""
    windows = {}
    for face, track in enumerate(tracks):
        span = track.face_frames
        windows[face] = range(span.start - span.start % chunk_frames,
                              min(-(-span.stop // chunk_frames) * chunk_frames, len(track)))
    z_id: list[list[np.ndarray]] = [[] for _ in tracks]
    z_lnd: list[list[np.ndarray]] = [[] for _ in tracks]
    for face, _, crops in iter_face_chunks(uri, tracks, windows, chunk_frames, aligned=True):
        images = crops_to_tensor(crops)
        z_id[face].append(encode_identity(images).cpu().numpy())
        z_lnd[face].append(encode_landmarks(images).cpu().numpy())
    codes = []
    for face, track in enumerate(tracks):
        keep = slice(track.face_frames.start - windows[face].start, track.face_frames.stop - windows[face].start)
        codes.append((np.concatenate(z_id[face])[keep].astype(np.float32),
                      np.concatenate(z_lnd[face])[keep].astype(np.float32)))
    return codes


def tracks_summary(uri: str, tracks: Sequence[AlignedTrack], z_ids: np.ndarray) -> dict:
    """What `latents/<video>/tracks.json` says: each track's frames and size, and 1 − cosine between their z_id."""
    return {"video": uri, "num_frames": len(tracks[0]),
            "tracks": [{"index": k, "first": t.face_frames.start, "last": t.face_frames.stop - 1,
                        "detected": int(np.sum(t.status == FrameStatus.DETECTED)), "size": round(t.face_size, 1)}
                       for k, t in enumerate(tracks)],
            "identity_distance": np.round(identity_distances(z_ids), 4).tolist()}


def find_faces(task: VideoTask, face: FaceConfig, landmarker: FaceLandmarker, encode_identity, encode_landmarks,
               chunk_frames: int) -> tuple[list[AlignedTrack], list[tuple[np.ndarray, np.ndarray]]]:
    """Passes 1 and 2: every track and its codes; tracks of one person split by an absence are joined again by
    their identity (`dva.face.tracks.merge_by_identity`), and the joined tracks encoded once more."""
    tracks = align_video_faces(task.uri, landmarker, face)
    codes = encode_face_codes(task.uri, tracks, encode_identity, encode_landmarks, chunk_frames)
    if len(tracks) > 1:
        merged = merge_by_identity(tracks, np.stack([z.mean(axis=0) for z, _ in codes]),
                                   max_gap=face.track.reassociate_max_gap,
                                   min_cosine=face.track.reassociate_min_cosine)
        if len(merged) < len(tracks):
            tracks = [tracks[group[0]] if len(group) == 1 else dataclasses.replace(
                tracks[group[0]], points=joined.points, status=joined.status,
                quads=track_quads(joined.points, face.align)) for joined, group in merged]
            codes = encode_face_codes(task.uri, tracks, encode_identity, encode_landmarks, chunk_frames)
    return tracks, codes


def prepare_video(task: VideoTask, face: FaceConfig, landmarker: FaceLandmarker, encode_identity, encode_landmarks,
                  plan: EditPlan, store: LatentStore, latent_key: LatentKey, chunk_frames: int,
                  reuse_latents: bool) -> Iterator[dict]:
    """Yield one row per chunk of each addressed track: crops (or none when x_T is stored), z_lnd, the track's mean
    z_id, its edits. The tracks and codes are stored (committed last), whether or not x_T will be."""
    stored = reuse_latents and store.has_tracks(latent_key, task.source)
    if stored:
        tracks = store.load_tracks()
        codes = [store.load_codes(k) for k in range(len(tracks))]
    else:
        store.invalidate()
        tracks, codes = find_faces(task, face, landmarker, encode_identity, encode_landmarks, chunk_frames)
    # The per-person reduction: one identity for every frame with that face (SPEC §3 step 4), never re-normalised.
    # Only those frames are inverted and edited: elsewhere the person is absent.
    z_ids = np.stack([z.mean(axis=0) for z, _ in codes])
    if not stored:
        store.save_tracks(tracks, codes, tracks_summary(task.uri, tracks, z_ids))
        store.commit_tracks(latent_key, len(tracks), task.uri, task.source)
    addressed = plan.faces(task, tracks, z_ids) if task.edits else {"": list(range(len(tracks)))}
    faces = sorted({k for ks in addressed.values() for k in ks})
    num_chunks = {k: -(-len(tracks[k].face_frames) // chunk_frames) for k in faces}
    pair_chunks = {edit: sum(num_chunks[k] for k in ks) for edit, ks in addressed.items()}
    common = {"uri": task.uri, "key": task.key, "video_id": task.video_id, "num_frames": len(tracks[0]),
              "pair_chunks": json.dumps(pair_chunks), "error": ""}
    rows = {}
    for k in faces:
        edits = [e for e in task.edits if k in addressed[e]]
        face_task = VideoTask(task.uri, task.key, task.video_id, edits, task.source, face=k)
        rows[k] = {**common, "face": k, "num_chunks": num_chunks[k], "z_id": z_ids[k], "edits": json.dumps(edits),
                   "z_edits": plan(face_task, z_ids[k], tracks[k]).astype(np.float32) if edits
                   else np.zeros((0, z_ids.shape[1]), np.float32),
                   "has_x_T": reuse_latents and store.has_x_T(k, latent_key, task.source)}

    def chunk_row(k: int, start: int, crops: np.ndarray) -> dict:
        offset = start - tracks[k].face_frames.start
        return {**rows[k], "chunk": offset // chunk_frames, "start": start, "crops": crops,
                "z_lnd": codes[k][1][offset:offset + chunk_frames]}

    size = tracks[0].crop_size
    for k in (k for k in faces if rows[k]["has_x_T"]):
        for chunk in range(num_chunks[k]):
            yield chunk_row(k, tracks[k].face_frames.start + chunk * chunk_frames, np.zeros((0, size, size, 3),
                                                                                             np.uint8))
    to_crop = [k for k in faces if not rows[k]["has_x_T"]]
    if to_crop:
        for k, start, crops in iter_face_chunks(task.uri, tracks, {k: tracks[k].face_frames for k in to_crop},
                                                chunk_frames):
            yield chunk_row(k, start, crops)


def failed_row(task: VideoTask, error: str) -> dict:
    """The row stage A emits for a video it cannot prepare; it flows through stage B untouched."""
    return {"uri": task.uri, "key": task.key, "video_id": task.video_id, "num_frames": 0, "num_chunks": 0,
            "pair_chunks": "{}", "face": -1, "z_id": np.zeros(0, np.float32), "edits": "[]",
            "z_edits": np.zeros((0, 0), np.float32), "has_x_T": False, "error": error, "chunk": -1, "start": 0,
            "crops": np.zeros((0, 1, 1, 3), np.uint8), "z_lnd": np.zeros((0, 0), np.float32)}
