"""Every face of a video as its own track (several people; issue 19): association of per-frame detections.

`dva.face.track` follows one face per video. Here each detection above `min_face_size` (the side of the square with
its box's area, in frame pixels) joins a track or starts one:

  cost(track, face) = |centre(face) − centre(last hit)| / (size(last hit) · frames since the last hit)

A pair is allowed when its cost is at most `max_jump` (the single-track rule of `dva.face.track.choose_face`) and the
track was last hit at most `max_gap` frames ago; allowed pairs are taken cheapest first, one face per track and one
track per face per frame. A face that joins no track starts one. A track therefore starts and ends anywhere in the
video: its span is its first to its last hit. Inside the span, missed frames are interpolated; outside, the frames are
HELD — the frames where that person is absent, which the job neither encodes nor generates (`AlignedTrack.face_frames`).

`min_detected_fraction` applies to a track's own span, so a person seen in 20 frames of a 60-frame clip is kept when
they are detected in enough of those 20. Tracks with fewer than `min_hits` hits (a spurious detection) are dropped.

After a longer occlusion the same person comes back as a new track; `merge_by_identity` joins two tracks whose spans
do not overlap, whose gap is at most `max_gap` frames, and whose mean identities (e.g. mean z_id per track) have a
cosine of at least `min_cosine`. Tracks are ordered by their first hit, then by face size (larger first), then left to right.

`track_every_face` runs this on a video's frames with the settings of `TrackConfig`: the detector on every frame, or
(`detect_every` > 1) on every k-th frame with every tracked face followed between by its landmarks (`dva.face.follow`;
a followed track is measured from its face at the previous frame, and its followed frames are hits only once the next
detection joins it).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from dva.errors import NoFaceError
from dva.face.config import TrackConfig
from dva.face.detection import DetectedFace, FaceLandmarker
from dva.face.follow import Assign, Hits, follow_faces
from dva.face.track import FaceTrack, FrameStatus, fill_gaps, seen_frames


def association_cost(track_face: DetectedFace, frames_since: int, face: DetectedFace) -> float:
    """Centre distance in units of the track's last face size per frame elapsed (the `max_jump` scale)."""
    distance = float(np.linalg.norm(face.centre - track_face.centre))
    return distance / (max(track_face.size, 1e-6) * max(frames_since, 1))


def match(references: Sequence[tuple[DetectedFace, int]], faces: Sequence[DetectedFace], *, max_jump: float,
          max_gap: int) -> dict[int, int]:
    """{track index: face index} of one frame: tracks given as (face to measure from, frames since it), allowed
    pairs (cost ≤ `max_jump`, at most `max_gap` frames since) taken cheapest first, one face per track."""
    pairs = sorted(
        (cost, ti, fi)
        for ti, (track_face, since) in enumerate(references) if since <= max_gap
        for fi, face in enumerate(faces)
        if (cost := association_cost(track_face, since, face)) <= max_jump
    )
    matched: dict[int, int] = {}
    taken: set[int] = set()
    for _, ti, fi in pairs:
        if ti not in matched and fi not in taken:
            matched[ti] = fi
            taken.add(fi)
    return matched


def associate(detections: Iterable[Sequence[DetectedFace]], *, max_jump: float, max_gap: int,
              min_face_size: float = 0.0) -> list[Hits]:
    """Every detection of every frame assigned to one track (see the module docstring); tracks in creation order."""
    tracks: list[Hits] = []
    for index, faces in enumerate(detections):
        faces = [face for face in faces if face.size >= min_face_size]
        matched = match([(t.last, index - t.frames[-1]) for t in tracks], faces, max_jump=max_jump, max_gap=max_gap)
        for ti, fi in matched.items():
            tracks[ti].add(index, faces[fi])
        for fi in sorted(set(range(len(faces))) - set(matched.values())):
            new = Hits()
            new.add(index, faces[fi])
            tracks.append(new)
    return tracks


class _Counted:
    """An iterable of frames' detections that counts the frames it yielded."""

    def __init__(self, detections: Iterable[Sequence[DetectedFace]]):
        self.detections, self.count = detections, 0

    def __iter__(self):
        for faces in self.detections:
            self.count += 1
            yield faces


def _track(hits: Hits, num_frames: int) -> FaceTrack:
    points = np.full((num_frames, 68, 2), np.nan, dtype=np.float32)
    for index, face in zip(hits.frames, hits.faces):
        points[index] = face.points
    return fill_gaps(points)


def _kept_tracks(hits: list[Hits], num_frames: int, name: str, *, min_detected_fraction: float, min_hits: int
                 ) -> list[FaceTrack]:
    kept = [h for h in hits if len(h.frames) >= min_hits and len(h.frames) / h.span >= min_detected_fraction]
    if not kept:
        seen = max((len(h.frames) for h in hits), default=0)
        raise NoFaceError(
            f"{name}: no face was tracked in enough frames (the longest track has {seen} detections; a track needs "
            f"{min_hits} and a detected fraction of its span of at least {min_detected_fraction})")
    kept.sort(key=lambda h: (h.frames[0], -h.mean_size, float(h.faces[0].centre[0])))
    return [_track(h, num_frames) for h in kept]


def face_tracks(detections: Iterable[Sequence[DetectedFace]], name: str, *, max_jump: float, max_gap: int,
                min_detected_fraction: float, min_face_size: float = 0.0, min_hits: int = 2) -> list[FaceTrack]:
    """Every person's FaceTrack over the whole video (HELD outside the person's span), ordered by first hit, then
    larger face first, then left to right. NoFaceError naming `name` when no track is kept."""
    frames = _Counted(detections)  # consumed lazily: only the hits of each track are kept
    hits = associate(frames, max_jump=max_jump, max_gap=max_gap, min_face_size=min_face_size)
    return _kept_tracks(hits, frames.count, name, min_detected_fraction=min_detected_fraction, min_hits=min_hits)


def _every_face(cfg: TrackConfig) -> Assign:
    """`follow_faces`' rule for every face: `match`, and each unmatched face (above `min_face_size`) starts a track."""

    def assign(references: list[tuple[DetectedFace, int]], faces: Sequence[DetectedFace]
               ) -> tuple[dict[int, DetectedFace], list[DetectedFace]]:
        faces = [face for face in faces if face.size >= cfg.min_face_size]
        matched = match(references, faces, max_jump=cfg.max_jump, max_gap=cfg.max_gap)
        taken = set(matched.values())
        return {ti: faces[fi] for ti, fi in matched.items()}, [f for fi, f in enumerate(faces) if fi not in taken]

    return assign


def track_every_face(frames: Iterable[np.ndarray], landmarker: FaceLandmarker, cfg: TrackConfig, name: str,
                     total: int | None = None, progress: bool = False) -> list[FaceTrack]:
    """Pass 1 of a video for every face in it (the counterpart of `dva.face.track.track_faces`): stream its frames
    through the detector (every frame, or every `cfg.detect_every`-th with every face followed between; see
    `dva.face.follow`); no frame outlives its landmarks. NoFaceError naming `name` when no track is kept."""
    frames = tqdm(frames, total=total, desc=f"landmarks {name}", unit="frame", disable=not progress)
    if cfg.detect_every == 1:
        return face_tracks((landmarker.detect(frame) for frame in frames), name, max_jump=cfg.max_jump,
                           max_gap=cfg.max_gap, min_detected_fraction=cfg.min_detected_fraction,
                           min_face_size=cfg.min_face_size, min_hits=cfg.min_hits)
    hits, count = follow_faces(frames, landmarker, cfg, _every_face(cfg))
    return _kept_tracks(hits, count, name, min_detected_fraction=cfg.min_detected_fraction, min_hits=cfg.min_hits)


def identity_cosines(identities: np.ndarray, others: Optional[np.ndarray] = None) -> np.ndarray:
    """[T, U] cosine between the rows of `identities` [T, D] and of `others` [U, D] (default: `identities`)."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    return unit(identities) @ unit(identities if others is None else others).T


def identity_distances(identities: np.ndarray) -> np.ndarray:
    """[T, T] 1 − cosine between the tracks' mean identities (0 on the diagonal, at most 2)."""
    distances = np.clip(1.0 - identity_cosines(identities), 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    return distances


def merge_by_identity(tracks: Sequence[FaceTrack], identities: np.ndarray, *, max_gap: int, min_cosine: float
                      ) -> list[tuple[FaceTrack, list[int]]]:
    """Join tracks of one person split by an occlusion: spans disjoint, gap ≤ `max_gap` frames, cosine of their
    identities (rows of `identities`, one per track) ≥ `min_cosine`. Returns each merged track with the indices of
    the input tracks it joins, in order of first frame; the best-matching pairs are joined first."""
    groups = [[i] for i in range(len(tracks))]
    owner = list(range(len(tracks)))
    spans = [seen_frames(t.status) for t in tracks]

    def group_frames(g: list[int]) -> list[range]:
        return [spans[i] for i in g]

    def compatible(a: list[int], b: list[int]) -> bool:
        ra, rb = group_frames(a), group_frames(b)
        disjoint = all(x.stop <= y.start or y.stop <= x.start for x in ra for y in rb)
        gap = min(max(y.start - x.stop, x.start - y.stop) for x in ra for y in rb)
        return disjoint and gap <= max_gap

    cosines = identity_cosines(identities)
    pairs = sorted(((cosines[i, j], i, j) for i in range(len(tracks)) for j in range(i + 1, len(tracks))),
                   reverse=True)
    for cosine, i, j in pairs:
        if cosine < min_cosine:
            break
        a, b = owner[i], owner[j]
        if a == b or not compatible(groups[a], groups[b]):
            continue
        groups[a].extend(groups[b])
        for k in groups[b]:
            owner[k] = a
        groups[b] = []
    merged = []
    for g in (sorted(g) for g in groups if g):
        points = np.full_like(tracks[g[0]].points, np.nan)
        for i in g:
            detected = tracks[i].status == FrameStatus.DETECTED
            points[detected] = tracks[i].points[detected]
        merged.append((fill_gaps(points), g))
    merged.sort(key=lambda item: seen_frames(item[0].status).start)
    return merged
