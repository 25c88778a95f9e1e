"""One face track per video: pick a face in every frame, then fill the frames where none was found.

Detection is per frame and may run anywhere (one process streaming frames, or actors on batches); selection needs
the detections in frame order and is a pure function of them. The largest face starts the track; after that the
detection nearest the last accepted one is followed, unless it is further than `max_jump` face sizes per frame
elapsed (then the frame counts as missed rather than jumping to another person). Missed frames get landmarks
interpolated linearly between their neighbours, or held from the first/last detection at the ends.

With `detect_every` = k > 1 (`follow_face`) the detector runs on every k-th frame only and the face is followed
between by its landmarks alone (`dva.face.follow`); a followed frame counts as detected only once a later detection
confirms the face is still there, so a face that vanishes between two detections is never followed onto the
background.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from dva.errors import NoFaceError
from dva.face.config import TrackConfig
from dva.face.detection import DetectedFace, FaceLandmarker
from dva.face.follow import Assign, follow_faces


class FrameStatus(IntEnum):
    DETECTED = 0
    INTERPOLATED = 1  # between two detections
    HELD = 2  # before the first or after the last detection: nothing was seen there; editors may skip the frame


@dataclass
class FaceTrack:
    points: np.ndarray  # (N, 68, 2) float32, every frame filled
    status: np.ndarray  # (N,) uint8 FrameStatus

    @property
    def detected_fraction(self) -> float:
        return float(np.mean(self.status == FrameStatus.DETECTED))

    def __len__(self) -> int:
        return len(self.status)


def seen_frames(status: np.ndarray) -> range:
    """The frames from a track's first to its last detection (outside them the track's frames are HELD)."""
    seen = np.flatnonzero(status != FrameStatus.HELD)
    return range(int(seen[0]), int(seen[-1]) + 1) if seen.size else range(0)


def choose_face(
    faces: Sequence[DetectedFace], previous: DetectedFace | None, frames_since: int, cfg: TrackConfig
) -> DetectedFace | None:
    """The face to follow in this frame, or None when no detection belongs to the track."""
    if not faces:
        return None
    if previous is None or cfg.policy == "largest":
        return max(faces, key=lambda face: face.area)
    distances = [float(np.linalg.norm(face.centre - previous.centre)) for face in faces]
    best = int(np.argmin(distances))
    if distances[best] > cfg.max_jump * previous.size * max(frames_since, 1):
        return None
    return faces[best]


def fill_gaps(points: np.ndarray) -> FaceTrack:
    """Fill frames whose points are NaN: linear between detections, held at the ends. Needs one detection."""
    n = len(points)
    detected = ~np.isnan(points.reshape(n, -1)).any(axis=1)
    hits = np.flatnonzero(detected)
    if hits.size == 0:
        raise ValueError("fill_gaps needs at least one detected frame")
    frames = np.arange(n)
    flat = points.reshape(n, -1)
    filled = np.stack([np.interp(frames, hits, flat[hits, k]) for k in range(flat.shape[1])], axis=1)
    status = np.full(n, FrameStatus.DETECTED, dtype=np.uint8)
    status[~detected] = FrameStatus.INTERPOLATED
    status[(frames < hits[0]) | (frames > hits[-1])] = FrameStatus.HELD
    return FaceTrack(points=filled.reshape(points.shape).astype(np.float32), status=status)


def choose_faces(detections: Iterable[Sequence[DetectedFace]], cfg: TrackConfig) -> Iterator[Optional[np.ndarray]]:
    """The track's points in each frame of per-frame detections (None where no detection belongs to it)."""
    previous, last_hit = None, -1
    for index, faces in enumerate(detections):
        face = choose_face(faces, previous, index - last_hit, cfg)
        if face is not None:
            previous, last_hit = face, index
        yield None if face is None else face.points


def _one_face(cfg: TrackConfig) -> Assign:
    """`follow_faces`' rule for one track: `choose_face`; the first face chosen starts the track."""

    def assign(references: list[tuple[DetectedFace, int]], faces: Sequence[DetectedFace]
               ) -> tuple[dict[int, DetectedFace], list[DetectedFace]]:
        previous, since = references[0] if references else (None, 0)
        face = choose_face(faces, previous, since, cfg)
        if face is None:
            return {}, []
        return ({0: face}, []) if references else ({}, [face])

    return assign


def follow_face(frames: Iterable[np.ndarray], landmarker: FaceLandmarker, cfg: TrackConfig
                ) -> list[Optional[np.ndarray]]:
    """The track's points in each frame (None: missed), running the detector every `cfg.detect_every` frames, on
    a lost face, and on every frame while no face is tracked (`dva.face.follow`)."""
    tracks, count = follow_faces(frames, landmarker, cfg, _one_face(cfg))
    chosen: list[Optional[np.ndarray]] = [None] * count
    for hits in tracks:  # at most one
        for index, face in zip(hits.frames, hits.faces):
            chosen[index] = face.points
    return chosen


def select_track(detections: Iterable[Sequence[DetectedFace]], cfg: TrackConfig, name: str) -> FaceTrack:
    """The face track through per-frame detections (consumed lazily; only the chosen face's points are kept).

    Raises NoFaceError naming `name` when too few frames have the face.
    """
    return track_from_points(choose_faces(detections, cfg), cfg, name)


def track_from_points(chosen_points: Iterable[Optional[np.ndarray]], cfg: TrackConfig, name: str) -> FaceTrack:
    """The filled track from each frame's chosen points (None: missed); NoFaceError naming `name` when too few."""
    missed = np.full((68, 2), np.nan, dtype=np.float32)
    chosen = [missed if points is None else points for points in chosen_points]
    n = len(chosen)
    found = sum(points is not missed for points in chosen)
    if found == 0:
        raise NoFaceError(f"{name}: no face was detected in any of its {n} frames")
    if found / n < cfg.min_detected_fraction:
        raise NoFaceError(
            f"{name}: a face was detected in only {found} of {n} frames ({found / n:.0%}); "
            f"lower track.min_detected_fraction (now {cfg.min_detected_fraction}) to accept it"
        )
    return fill_gaps(np.stack(chosen))


def track_faces(
    frames: Iterable[np.ndarray], landmarker: FaceLandmarker, cfg: TrackConfig, name: str,
    total: int | None = None, progress: bool = False,
) -> FaceTrack:
    """Pass 1 of a video: stream its frames through the detector (every frame, or every `cfg.detect_every`-th with
    the face followed between); no frame outlives its landmarks."""
    frames = tqdm(frames, total=total, desc=f"landmarks {name}", unit="frame", disable=not progress)
    if cfg.detect_every == 1:
        return select_track((landmarker.detect(frame) for frame in frames), cfg, name)
    return track_from_points(follow_face(frames, landmarker, cfg), cfg, name)
