"""The per-video result of the face front end, stored beside the crop video as `.npz`.

It holds everything the later stages need without redoing pass 1: the filled landmark track and its per-frame
status, the smoothed quads (to crop again and to paste back), and the video facts they refer to.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dva.errors import StorageError
from dva.face.track import FrameStatus, seen_frames
from dva.face.warp import to_crop_coords
from dva.storage import atomic_output, open_file


@dataclass
class AlignedTrack:
    source: str  # the video the track belongs to
    fps: Fraction
    frame_size: tuple[int, int]  # upright (width, height) of the source frames
    crop_size: int
    points: np.ndarray  # (N, 68, 2) float32 landmarks in frame pixels, gaps filled
    status: np.ndarray  # (N,) uint8 dva.face.track.FrameStatus
    quads: np.ndarray  # (N, 4, 2) float64 smoothed quads in frame pixels

    def __len__(self) -> int:
        return len(self.status)

    @property
    def detected_fraction(self) -> float:
        return float(np.mean(self.status == FrameStatus.DETECTED))

    @property
    def face_frames(self) -> range:
        """The frames from the first to the last detection. The HELD frames outside it show no tracked face: they
        are neither encoded into the mean z_id nor inverted, and stage C copies them unchanged."""
        return seen_frames(self.status)

    @property
    def face_size(self) -> float:
        """The mean side of the track's quads over its face frames, in frame pixels (0 for a track without any)."""
        frames = self.face_frames
        quads = self.quads[frames.start:frames.stop]
        return float(np.linalg.norm(quads[:, 3] - quads[:, 0], axis=-1).mean()) if len(quads) else 0.0

    def crop_points(self, index: int) -> np.ndarray:
        """Frame `index`'s landmarks in its crop's coordinates (for the hull mask)."""
        return to_crop_coords(self.points[index], self.quads[index], self.crop_size)

    def save(self, uri: str) -> None:
        """Write to a local path or URI; the file appears only once complete."""
        with atomic_output(uri, ".npz") as path:
            self.write(path)

    def write(self, path: Path | io.BytesIO) -> None:
        """Write to a local `.npz` path or a buffer (not atomic: for callers that commit several files together)."""
        np.savez(
            path,
            source=np.array(self.source),
            fps=np.array([self.fps.numerator, self.fps.denominator]),
            frame_size=np.array(self.frame_size),
            crop_size=np.array(self.crop_size),
            points=self.points,
            status=self.status,
            quads=self.quads,
        )

    @classmethod
    def file_bytes(cls, source: str, num_frames: int) -> int:
        """Bytes of the `.npz` that `write` makes of a track of `num_frames` frames of the video `source`."""
        def written(n: int) -> int:
            buf = io.BytesIO()
            cls(source, Fraction(1), (0, 0), 0, np.zeros((n, 68, 2), np.float32), np.zeros(n, np.uint8),
                np.zeros((n, 4, 2), np.float64)).write(buf)
            return buf.tell()

        empty = written(0)
        return empty + num_frames * (written(1) - empty)

    @classmethod
    def load(cls, uri: str) -> AlignedTrack:
        with open_file(uri) as f:
            try:
                data = np.load(f, allow_pickle=False)
                return cls(
                    source=str(data["source"]),
                    fps=Fraction(int(data["fps"][0]), int(data["fps"][1])),
                    frame_size=(int(data["frame_size"][0]), int(data["frame_size"][1])),
                    crop_size=int(data["crop_size"]),
                    points=data["points"],
                    status=data["status"],
                    quads=data["quads"],
                )
            except (ValueError, KeyError, OSError) as err:
                raise StorageError(f"{uri}: not a face track file ({err})") from None
