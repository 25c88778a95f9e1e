"""`dva face-crop`: the aligned face-crop video and the face track of one video, in two streaming passes.

Pass 1 decodes the video and keeps only landmarks (the smoothing needs the whole track); pass 2 decodes it again
and writes each frame's crop. Neither pass holds more than one frame. Both outputs are staged and committed only
when everything succeeded, so a failed video leaves nothing in the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from tqdm import tqdm

from dva.errors import VideoError
from dva.face.align import track_quads
from dva.face.config import FaceConfig
from dva.face.landmarker import FaceLandmarker, build_landmarker
from dva.face.record import AlignedTrack
from dva.face.track import FaceTrack, track_faces
from dva.face.tracks import track_every_face
from dva.face.warp import iter_crops
from dva.storage import atomic_output
from dva.video import VideoWriter, iter_frames, probe


@dataclass(frozen=True)
class CropOutputs:
    video: str  # <out_dir>/<stem>.crop.mp4
    track: str  # <out_dir>/<stem>.track.npz
    num_frames: int
    detected_fraction: float


def output_uris(in_uri: str, out_dir: str) -> tuple[str, str]:
    stem = PurePosixPath(str(in_uri).rstrip("/")).stem
    base = str(out_dir).rstrip("/")
    return f"{base}/{stem}.crop.mp4", f"{base}/{stem}.track.npz"


def _aligned(uri: str, info, track: FaceTrack, cfg: FaceConfig) -> AlignedTrack:
    return AlignedTrack(
        source=str(uri), fps=info.fps, frame_size=info.size, crop_size=cfg.align.crop_size,
        points=track.points, status=track.status, quads=track_quads(track.points, cfg.align),
    )


def align_video(uri: str, landmarker: FaceLandmarker, cfg: FaceConfig, progress: bool = False) -> AlignedTrack:
    """Pass 1: every frame's landmarks -> one face track -> smoothed quads, with the video facts they refer to."""
    info = probe(uri)
    track = track_faces(iter_frames(uri), landmarker, cfg.track, name=str(uri), total=info.num_frames,
                        progress=progress)
    return _aligned(uri, info, track, cfg)


def align_video_faces(uri: str, landmarker: FaceLandmarker, cfg: FaceConfig, progress: bool = False
                      ) -> list[AlignedTrack]:
    """Pass 1 for every person: each face track (`dva.face.tracks.track_every_face`) with its smoothed quads."""
    info = probe(uri)
    tracks = track_every_face(iter_frames(uri), landmarker, cfg.track, name=str(uri), total=info.num_frames,
                              progress=progress)
    return [_aligned(uri, info, track, cfg) for track in tracks]


def crop_video(
    in_uri: str, out_dir: str, cfg: FaceConfig, landmarker: FaceLandmarker | None = None, progress: bool = True
) -> CropOutputs:
    """Write `<stem>.crop.mp4` (crop_size square, source fps) and `<stem>.track.npz` (AlignedTrack) to `out_dir`.

    Raises VideoError for unreadable input and NoFaceError when too few frames show a face.
    """
    record = align_video(in_uri, landmarker or build_landmarker(cfg), cfg, progress=progress)
    video_uri, track_uri = output_uris(in_uri, out_dir)
    with atomic_output(track_uri, ".npz") as track_path:  # committed after the video, and only with it
        record.write(track_path)
        with VideoWriter(video_uri, record.fps, crf=cfg.crop_crf) as writer:
            frames = tqdm(iter_frames(in_uri), total=len(record), desc=f"crops {in_uri}", unit="frame",
                          disable=not progress)
            for crop in iter_crops(frames, record.quads, cfg.align.crop_size):
                writer.write(crop)
            if writer.frames_written != len(record):
                raise VideoError(f"{in_uri}: pass 2 decoded {writer.frames_written} frames, pass 1 {len(record)}")
    return CropOutputs(video_uri, track_uri, len(record), record.detected_fraction)
