"""Face frames of the videos a job will process: what its UNet calls, stored bytes and stage-A time scale with.

A video whose face tracks the job will reuse (stored under the output for the job's latent key and the video as it
is now) is counted exactly, from its `tracks.json`. Any other is counted by a sampled detection with the job's own
face back end: its detector runs on every k-th frame (`SAMPLED_FRAMES` frames per video), the faces of at least
`face.track.min_face_size` are counted, and each sampled frame stands for its share of the video's frames. A
sampled video's face j stands for "a (j+1)-th face": it is counted over the sampled frames that show more than j
faces, so face 0 is seen wherever any face is (the largest face, as `@largest` edits and evaluation take it, is
counted as face 0). Beyond `SAMPLED_VIDEOS` videos to sample, the others are counted at the sampled videos' faces
per frame. Without a face back end to run (its weights are remote and not fetched here), one face per frame.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence

from dva.editing.faces import FaceSelector
from dva.errors import DvaError
from dva.latents import LatentKey, LatentStore, read_tracks_summary
from dva.preflight.report import describe_error

SAMPLED_FRAMES = 16  # detections per sampled video
SAMPLED_VIDEOS = 32  # videos sampled per plan; the rest are counted at their faces per frame

STORED, SAMPLED, SCALED, ASSUMED = "stored tracks", "sampled detection", "scaled from the sampled videos", \
    "assumed one face per frame"


@dataclass(frozen=True)
class VideoFaces:
    """What the plan counts of one video's faces."""

    frames: int  # frames of the video
    faces: tuple[int, ...]  # face frames of each track (stored) or of each face by order (estimated)
    largest: int  # the index into `faces` of the largest face
    how: str  # STORED, SAMPLED, SCALED or ASSUMED

    def addressed(self, selector: FaceSelector) -> list[int]:
        """The faces an edit with `selector` changes; `match:` counts every face (at most that many match)."""
        if selector.kind == "largest":
            return [self.largest] if self.faces else []
        if selector.kind == "index":
            return [selector.index] if selector.index < len(self.faces) else []
        return list(range(len(self.faces)))


def stored_faces(output: str, video_id: str, key: Optional[LatentKey], source: str) -> Optional[VideoFaces]:
    """The exact face frames of a video whose tracks the job will reuse (`reuse_latents`), else None."""
    if key is None or not LatentStore(output, video_id).has_tracks(key, source):
        return None
    summary = read_tracks_summary(output, video_id)
    if summary is None:
        return None
    tracks = summary["tracks"]
    largest = max(range(len(tracks)), key=lambda k: tracks[k]["size"], default=0)
    return VideoFaces(int(summary["num_frames"]), tuple(t["last"] - t["first"] + 1 for t in tracks), largest, STORED)


def sampled_faces(uri: str, frames: int, landmarker, min_face_size: float) -> VideoFaces:
    """Faces counted on every k-th frame of the video, k = frames / `SAMPLED_FRAMES` (at least 1)."""
    from dva.video import iter_frames

    stride = max(1, -(-frames // SAMPLED_FRAMES))
    counts: list[int] = []
    decoded = 0
    with contextlib.closing(iter_frames(uri)) as video:
        for index, frame in enumerate(video):
            decoded += 1
            if index % stride == 0:
                counts.append(sum(face.size >= min_face_size for face in landmarker.detect(frame)))
    share = decoded / max(len(counts), 1)
    faces = tuple(round(sum(c > j for c in counts) * share) for j in range(max(counts, default=0)))
    return VideoFaces(decoded, faces, 0, SAMPLED)


def count_faces(videos: Sequence[tuple[str, int, Optional[VideoFaces]]], landmarker, min_face_size: float
                ) -> dict[str, VideoFaces | str]:
    """Each of `videos` ((uri, frames from its container, its stored faces or None)) counted: stored faces as they
    are, up to `SAMPLED_VIDEOS` others (spread over the list) by a sampled detection, the rest scaled; or the reason
    a video cannot be decoded (the job records it as failed)."""
    found: dict[str, VideoFaces | str] = {uri: stored for uri, _, stored in videos if stored is not None}
    rest = [(uri, frames) for uri, frames, stored in videos if stored is None]
    if landmarker is None:
        found.update({uri: VideoFaces(frames, (frames,), 0, ASSUMED) for uri, frames in rest})
        return found
    step = max(1, -(-len(rest) // SAMPLED_VIDEOS))
    for uri, frames in rest[::step]:
        try:
            found[uri] = sampled_faces(uri, frames, landmarker, min_face_size)
        except DvaError as err:
            found[uri] = describe_error(err)
    sampled = [found[uri] for uri, _ in rest[::step] if isinstance(found[uri], VideoFaces)]
    seen = sum(v.frames for v in sampled)
    per_frame = [sum(v.faces[j] for v in sampled if len(v.faces) > j) / max(seen, 1)
                 for j in range(max((len(v.faces) for v in sampled), default=0))]
    for uri, frames in rest:
        if uri not in found:
            found[uri] = VideoFaces(frames, tuple(round(r * frames) for r in per_frame), 0, SCALED)
    return found
