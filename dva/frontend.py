"""The face front end, with no Ray: video → face track → aligned crops → z_id (mean) and z_lnd → chunks.

It is stage A of the edit job and the encoder of preprocessing and evaluation.

A video is decoded three times and never held whole: pass 1 keeps landmarks only (smoothing needs the whole track),
pass 2 keeps one z_id and z_lnd per frame (the mean z_id is needed before any inversion), pass 3 crops again and
emits chunks of `chunk_frames` consecutive crops. When the video's latents are stored for this model and N, all
three passes are skipped and the chunks carry no crops: stage B loads x_T instead. Between passes 2 and 3 the
caller's `resolve_edits` turns the video's edit specs into z_id (the edit job passes its own; a clip edit decodes
the few frames it optimises on once more).
"""

from __future__ import annotations

import json
from itertools import islice
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from dva.crops import crops_to_tensor
from dva.face.config import FaceConfig
from dva.face.crop_video import align_video
from dva.face.landmarker import FaceLandmarker
from dva.face.mask import landmark_hull_mask
from dva.face.record import AlignedTrack
from dva.face.warp import iter_crops
from dva.latents import LatentKey, LatentStore
from dva.video import iter_frames
from dva.video.decode import stack_chunks

@dataclass
class VideoTask:
    uri: str
    key: str  # output key relative to the output prefix
    video_id: str
    edits: list[str]  # edit specs still to do for this video (empty: encode only)
    source: str = ""  # `dva.storage.file_stamp` of the video when the job started: stored latents must match it


# (task, mean z_id [D], face track) → the z_id to decode with for each of `task.edits`, [K, D]; built by the job.
# The track lets an edit that needs pixels (CLIP) crop the frames it wants again.
ResolveEdits = Callable[[VideoTask, np.ndarray, AlignedTrack], np.ndarray]


def training_masks(model, track: AlignedTrack, images: torch.Tensor, start: int, brow_lift: float) -> np.ndarray:
    """L_reg masks [n, S, S] bool of the crops of frames start…: the face parser's training mask when the model has
    one (`model.face_parser`), else the landmark hull of the track's points."""
    if model.face_parser is not None:
        return model.face_parser(images).cpu().numpy().astype(bool)
    size = images.shape[-1]
    return np.stack([landmark_hull_mask(track.crop_points(start + i), size, brow_lift)
                     for i in range(images.shape[0])])


def encode_codes(task: VideoTask, track: AlignedTrack, encode_identity, encode_landmarks, chunk_frames: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: z_id and z_lnd of every frame's crop."""
    z_id, z_lnd = [], []
    for crops in stack_chunks(iter_crops(iter_frames(task.uri), track.quads, track.crop_size), chunk_frames):
        images = crops_to_tensor(crops)
        z_id.append(encode_identity(images).cpu().numpy())
        z_lnd.append(encode_landmarks(images).cpu().numpy())
    return np.concatenate(z_id).astype(np.float32), np.concatenate(z_lnd).astype(np.float32)


def prepare_video(task: VideoTask, face: FaceConfig, landmarker: FaceLandmarker, encode_identity, encode_landmarks,
                  resolve_edits: ResolveEdits, store: Optional[LatentStore], latent_key: LatentKey,
                  chunk_frames: int, reuse_latents: bool) -> Iterator[dict]:
    """Yield one row per chunk of the video: crops (or none when x_T is stored), z_lnd, the mean z_id, the edits."""
    cached = store is not None and reuse_latents and store.is_complete(latent_key, task.source)
    if cached:
        track = store.load_track()
        z_id_frames, z_lnd = store.load_codes()
    else:
        track = align_video(task.uri, landmarker, face)
        z_id_frames, z_lnd = encode_codes(task, track, encode_identity, encode_landmarks, chunk_frames)
        if store is not None:
            store.invalidate()
            store.save_track(track)
            store.save_codes(z_id_frames, z_lnd)
    # The per-video reduction: one identity for every frame with a face (SPEC §3 step 4), never re-normalised.
    # Only those frames are inverted and edited: the HELD ones before and after them carry no face.
    face = track.face_frames
    z_id = z_id_frames[face.start:face.stop].mean(axis=0)
    z_edits = resolve_edits(task, z_id, track)
    num_chunks = -(-len(face) // chunk_frames)
    common = {"uri": task.uri, "key": task.key, "video_id": task.video_id, "num_frames": len(track),
              "num_chunks": num_chunks, "z_id": z_id, "edits": json.dumps(task.edits),
              "z_edits": z_edits.astype(np.float32), "has_x_T": cached, "error": ""}
    crops_iter = (None if cached else
                  stack_chunks(iter_crops(islice(iter_frames(task.uri), face.start, face.stop),
                                          track.quads[face.start:face.stop], track.crop_size), chunk_frames))
    for chunk in range(num_chunks):
        start = face.start + chunk * chunk_frames
        stop = min(start + chunk_frames, face.stop)
        crops = (np.zeros((0, track.crop_size, track.crop_size, 3), np.uint8) if crops_iter is None
                 else next(crops_iter))
        yield {**common, "chunk": chunk, "start": start, "crops": crops, "z_lnd": z_lnd[start:stop]}


def failed_row(task: VideoTask, error: str) -> dict:
    """The row stage A emits for a video it cannot prepare; it flows through stage B untouched."""
    return {"uri": task.uri, "key": task.key, "video_id": task.video_id, "num_frames": 0, "num_chunks": 0,
            "z_id": np.zeros(0, np.float32), "edits": "[]", "z_edits": np.zeros((0, 0), np.float32),
            "has_x_T": False, "error": error, "chunk": -1, "start": 0,
            "crops": np.zeros((0, 1, 1, 3), np.uint8), "z_lnd": np.zeros((0, 0), np.float32)}
