"""One face track per video: pick a face in every frame, then fill the frames where none was found.

Detection is per frame and may run anywhere (one process streaming frames, or actors on batches); selection needs
the detections in frame order and is a pure function of them. The largest face starts the track; after that the
detection nearest the last accepted one is followed, unless it is further than `max_jump` face sizes per frame
elapsed (then the frame counts as missed rather than jumping to another person). Missed frames get landmarks
interpolated linearly between their neighbours, or held from the first/last detection at the ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from dva.errors import NoFaceError
from dva.face.config import TrackConfig
from dva.face.detection import DetectedFace, FaceLandmarker


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


def select_track(detections: Iterable[Sequence[DetectedFace]], cfg: TrackConfig, name: str) -> FaceTrack:
    """The face track through per-frame detections (consumed lazily; only the chosen face's points are kept).

    Raises NoFaceError naming `name` when too few frames have the face.
    """
    missed = np.full((68, 2), np.nan, dtype=np.float32)
    chosen: list[np.ndarray] = []
    previous, last_hit = None, -1
    for index, faces in enumerate(detections):
        face = choose_face(faces, previous, index - last_hit, cfg)
        if face is not None:
            previous, last_hit = face, index
        chosen.append(missed if face is None else face.points)
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
    """Pass 1 of a video: stream its frames through the detector; no frame outlives its detection."""
    frames = tqdm(frames, total=total, desc=f"landmarks {name}", unit="frame", disable=not progress)
    return select_track((landmarker.detect(frame) for frame in frames), cfg, name)
