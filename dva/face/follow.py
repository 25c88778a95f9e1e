"""Following faces between detections by their landmarks alone (`track.detect_every` = k > 1), one face or several.

The detector runs on every k-th frame only; between, each followed face is found by its landmarks alone: frame t's
points give frame t+1's box (shaped as the detector draws boxes, from the offsets measured at the face's last
detection), and the landmark model finds the points in it. A followed box that overlaps the last one less than
`follow_min_iou` means a face is lost: the detector runs at once. It runs on every frame while no face is followed;
while some are, a face entering (or one lost and not found at once) waits for the next detection. Followed frames
count as hits only once a later detection confirms the face is still there (the next detection is assigned to the
track, measured from the followed face); otherwise they are missed frames, so a face that vanishes between two
detections is never followed onto the background. When the last frames were followed, one more detection on the
last frame confirms them.

Which detection continues which track is the caller's rule (`Assign`): `dva.face.track` keeps one face,
`dva.face.tracks` every face.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from dva.face.config import TrackConfig
from dva.face.detection import DetectedFace, FaceLandmarker


@dataclass
class Hits:
    """One track while frames stream in: its hits (detected or confirmed followed faces) in frame order."""

    frames: list[int] = field(default_factory=list)
    faces: list[DetectedFace] = field(default_factory=list)

    def add(self, index: int, face: DetectedFace) -> None:
        self.frames.append(index)
        self.faces.append(face)

    @property
    def last(self) -> DetectedFace:
        return self.faces[-1]

    @property
    def span(self) -> int:
        return self.frames[-1] - self.frames[0] + 1

    @property
    def mean_size(self) -> float:
        return float(np.mean([face.size for face in self.faces]))


# (references, detections) -> ({track index: its detection}, detections that start new tracks). A reference is the
# track's face to measure from and the frames elapsed since it.
Assign = Callable[[list[tuple[DetectedFace, int]], Sequence[DetectedFace]],
                  tuple[dict[int, DetectedFace], list[DetectedFace]]]


def _points_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class _BoxFromPoints:
    """The detector's box relative to the bounding box of its landmarks (offsets in units of that box's size)."""

    offsets: np.ndarray  # (4,)

    @classmethod
    def measure(cls, face: DetectedFace) -> _BoxFromPoints:
        ref = _points_box(face.points)
        size = np.tile(np.maximum(ref[2:] - ref[:2], 1e-3), 2)
        return cls((face.box[:4] - np.tile(ref[:2], 2)) / size)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        ref = _points_box(points)
        return np.tile(ref[:2], 2) + self.offsets * np.tile(ref[2:] - ref[:2], 2)


def _follow(landmarker: FaceLandmarker, frame: np.ndarray, face: DetectedFace, box_of: _BoxFromPoints,
            min_iou: float) -> Optional[DetectedFace]:
    """The face of the previous frame found again in `frame` by its landmarks alone, or None when it is lost."""
    box = box_of(face.points)
    points = np.asarray(landmarker.landmarks(frame, box), dtype=np.float32)
    if not np.isfinite(points).all():
        return None
    new_box = box_of(points)
    if _iou(new_box, box) < min_iou:
        return None
    return DetectedFace(box=new_box, points=points, score=face.score)


@dataclass
class _Followed:
    """A track with its following state: the face at the previous frame while followed, and the followed faces
    since its last detection, waiting for the next one."""

    hits: Hits
    face: Optional[DetectedFace] = None
    box_of: Optional[_BoxFromPoints] = None
    pending: list[tuple[int, DetectedFace]] = field(default_factory=list)

    def reference(self, index: int) -> tuple[DetectedFace, int]:
        if self.face is not None:
            return self.face, 1
        return self.hits.last, index - self.hits.frames[-1]

    def detected(self, index: int, face: Optional[DetectedFace]) -> None:
        """The detection at frame `index` assigned to this track (None: none): it confirms or drops the pending
        faces, and the track is followed from it (or no longer followed)."""
        if face is not None:
            for frame, followed in self.pending:
                self.hits.add(frame, followed)
            self.hits.add(index, face)
            self.box_of = _BoxFromPoints.measure(face)
        self.face, self.pending = face, []

    def confirm_end(self, face: Optional[DetectedFace]) -> None:
        """The last frame's detection for a track followed to the end: it replaces the followed last face."""
        if face is not None:
            self.pending[-1] = (self.pending[-1][0], face)
            for frame, followed in self.pending:
                self.hits.add(frame, followed)
        self.pending = []


def follow_faces(frames: Iterable[np.ndarray], landmarker: FaceLandmarker, cfg: TrackConfig, assign: Assign
                 ) -> tuple[list[Hits], int]:
    """Every track's hits in streamed frames (in creation order) and the number of frames; see the module docstring.
    No frame is held beyond the one being processed."""
    tracks: list[_Followed] = []
    last_detect, frame, count = -cfg.detect_every, None, 0
    for index, frame in enumerate(frames):
        count = index + 1
        followed = [track for track in tracks if track.face is not None]
        if followed and index - last_detect < cfg.detect_every:
            found = []
            for track in followed:
                face = _follow(landmarker, frame, track.face, track.box_of, cfg.follow_min_iou)
                if face is None:  # lost: detect on this frame, measured from every face's previous frame
                    break
                found.append(face)
            else:
                for track, face in zip(followed, found):
                    track.face = face
                    track.pending.append((index, face))
                continue
        last_detect = index
        assigned, new = assign([track.reference(index) for track in tracks], landmarker.detect(frame))
        for number, track in enumerate(tracks):
            track.detected(index, assigned.get(number))
        for face in new:
            tracks.append(_Followed(Hits()))
            tracks[-1].detected(index, face)
    waiting = [track for track in tracks if track.pending]
    if waiting:
        assigned, _ = assign([(track.face, 1) for track in waiting], landmarker.detect(frame))
        for number, track in enumerate(waiting):
            track.confirm_end(assigned.get(number))
    return [track.hits for track in tracks], count
