"""The files a report shows: stills cut from videos, and links to the videos themselves that work where the report is.

A report is a folder (local or s3://) opened as `index.html`, so every reference is a relative link when the file it
names can be reached by one: a local file from a local report, an object in the same bucket from an s3 report.
Otherwise (an s3 video in a local report, or another bucket) a small file is copied into the report's `media/`
folder and a large one is linked by its URI, which a browser cannot play from s3:// but a reader can fetch.
"""

from __future__ import annotations

import itertools
import os
import posixpath
from typing import Optional
from urllib.parse import quote

import cv2
import numpy as np

from dva.face.record import AlignedTrack
from dva.face.warp import crop_face
from dva.storage import atomic_output, is_remote, join, open_file, size, write_bytes_atomic
from dva.video import iter_frames

COPY_LIMIT_BYTES = 64 << 20  # videos up to this size are copied next to an s3-sourced report


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image of shape {rgb.shape} as PNG")
    return data.tobytes()


def middle_frame(uri: str, num_frames: int) -> np.ndarray:
    """The RGB frame at index num_frames // 2 (the last decodable one if the video is shorter)."""
    frame = None
    for frame in itertools.islice(iter_frames(uri), num_frames // 2 + 1):
        pass
    if frame is None:
        raise ValueError(f"{uri} has no frame")
    return frame


def fit_width(rgb: np.ndarray, width: int) -> np.ndarray:
    """`rgb` shrunk (area-averaged) to at most `width` pixels wide."""
    if rgb.shape[1] <= width:
        return rgb
    height = round(rgb.shape[0] * width / rgb.shape[1])
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def stills(uri: str, num_frames: int, track: Optional[AlignedTrack], width: int = 480,
           face_size: int = 192) -> dict[str, bytes]:
    """PNG stills of the middle frame: "frame" (fitted to `width`) and, with a track, "face" (the aligned crop)."""
    frame = middle_frame(uri, num_frames)
    out = {"frame": png_bytes(fit_width(frame, width))}
    if track is not None:
        index = min(num_frames // 2, len(track) - 1)
        out["face"] = png_bytes(crop_face(frame, track.quads[index], face_size))
    return out


def _bucket_and_key(uri: str) -> tuple[str, str]:
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    return f"{scheme}://{bucket}", key


class ReportFolder:
    """Writes the report's own files and turns outside files into links that work from `index.html`."""

    def __init__(self, prefix: str, copy_limit: int = COPY_LIMIT_BYTES):
        self.prefix = str(prefix).rstrip("/")
        self.copy_limit = copy_limit

    def write(self, name: str, data: bytes) -> str:
        """Write `data` as `name` (a relative path) in the report; return its link."""
        write_bytes_atomic(join(self.prefix, name), data)
        return quote(name)

    def link(self, uri: str, copy_name: str) -> str:
        """A link to `uri` from the report: relative when reachable, else a copy as `media/<copy_name>` (small
        files) or the URI itself."""
        uri = str(uri)
        if not is_remote(uri) and not is_remote(self.prefix):
            rel = os.path.relpath(os.path.abspath(uri.removeprefix("file://")),
                                  os.path.abspath(self.prefix.removeprefix("file://")))
            return quote(rel.replace(os.sep, "/"))
        if is_remote(uri) and is_remote(self.prefix):
            (store, key), (report_store, report_key) = _bucket_and_key(uri), _bucket_and_key(self.prefix)
            if store == report_store:
                return quote(posixpath.relpath(key, report_key or "."))
        if size(uri) > self.copy_limit:
            return uri
        name = f"media/{copy_name}"
        with open_file(uri) as src, atomic_output(join(self.prefix, name)) as tmp:
            with open(tmp, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        return quote(name)
