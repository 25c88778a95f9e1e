"""Streaming video decode (PyAV) from local paths or URIs (read through dva.storage), one upright RGB frame at a time.

Frames are never collected: callers get an iterator (or fixed-length chunks) and keep what they need. Rotation
metadata (the display matrix phones write for portrait video) is applied, so frames come out the way a player
shows them and `VideoInfo.width/height` are the upright size. RGB is converted with the matrix and range the
source is tagged with; `iter_timed_frames` also gives each frame's presentation time (variable-rate video keeps
its timing through the pipeline), and `VideoInfo.colour` the tags an output should carry.

Bad input policy, so jobs can record a clear per-video error:
- missing, zero-byte, non-video or audio-only files raise VideoError at open;
- an mp4 whose index (moov) is cut off cannot be opened: VideoError;
- an mp4 whose index survived but whose data is cut off yields the frames that are there, then raises VideoError
  (for the cut packet, or because more than `TRUNCATION_SLACK` of the indexed frames never came). A two-pass job
  therefore fails in its first pass, before writing anything.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

import av
import numpy as np

from dva.errors import StorageError, VideoError
from dva.storage import is_remote, open_file, size
from dva.threads import decoder_threads

# Edit lists may legitimately hide a couple of the indexed frames (B-frame priming); more than this is truncation.
TRUNCATION_SLACK = 2


@dataclass(frozen=True)
class Colour:
    """A video stream's colour tags, as FFmpeg's enum values (AVColorPrimaries, AVColorTransferCharacteristic,
    AVColorSpace, AVColorRange); 2 (0 for the range) means untagged."""

    primaries: int = 2
    transfer: int = 2
    matrix: int = 2
    range: int = 0

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Colour:
        return cls(int(frame.color_primaries), int(frame.color_trc), int(frame.colorspace), int(frame.color_range))


@dataclass(frozen=True)
class VideoInfo:
    """What a job needs to know about a source video before decoding it."""

    uri: str
    fps: Fraction
    time_base: Fraction
    num_frames: int | None  # from the container index; None where the container does not say (e.g. some mkv)
    width: int  # upright, after rotation
    height: int
    rotation: int  # degrees a player turns the stored frames clockwise: 0, 90, 180 or 270
    has_audio: bool
    duration: float | None  # seconds of the video stream, where known
    colour: Colour = Colour()

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def _byte_size(uri: str) -> int:
    try:
        return size(uri)
    except StorageError as err:  # it names the file and says whether it does not exist or cannot be reached
        raise VideoError(str(err)) from None


@contextlib.contextmanager
def open_container(uri: str, need_video: bool = True) -> Iterator[av.container.InputContainer]:
    """Open `uri` with PyAV, turning every way it can fail into a VideoError that names the file."""
    uri = str(uri)
    if _byte_size(uri) == 0:
        raise VideoError(f"{uri}: the file is empty (0 bytes)")
    source = open_file(uri) if is_remote(uri) else uri.removeprefix("file://")
    try:
        try:
            container = av.open(source, "r", metadata_errors="ignore")
        except av.FFmpegError as err:
            raise VideoError(
                f"{uri}: cannot be opened as a video ({err.strerror or err}); it is truncated, corrupt or not a video"
            ) from None
        try:
            if not (container.streams.video or container.streams.audio):  # e.g. an mp4 cut inside its index
                raise VideoError(f"{uri}: no audio or video stream; it is truncated, corrupt or not a video")
            if need_video and not container.streams.video:
                raise VideoError(f"{uri}: has no video stream")
            yield container
        finally:
            container.close()
    finally:
        if not isinstance(source, str):
            source.close()


def _upright(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4  # PyAV: counter-clockwise degrees, np.rot90 turns the same way
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _decoded(container: av.container.InputContainer, uri: str, threaded: bool) -> Iterator[av.VideoFrame]:
    stream = container.streams.video[0]
    stream.thread_count = decoder_threads()  # the process's thread budget (an actor's CPUs), or FFmpeg's choice
    if threaded:  # frame threads buffer several packets before the first frame comes out
        stream.thread_type = "AUTO"
    try:
        yield from container.decode(stream)
    except av.FFmpegError as err:
        raise VideoError(f"{uri}: corrupt video data ({err.strerror or err})") from None


def _frame_rate(stream: av.VideoStream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def probe(uri: str) -> VideoInfo:
    """Read the container header and the first frame (for rotation, and to prove the video decodes)."""
    uri = str(uri)
    with open_container(uri) as container:
        stream = container.streams.video[0]
        first = next(_decoded(container, uri, threaded=False), None)
        if first is None:
            raise VideoError(f"{uri}: the video stream has no decodable frame")
        fps = _frame_rate(stream)
        if not fps:
            raise VideoError(f"{uri}: the frame rate is unknown")
        quarter_turns = round(first.rotation / 90) % 4
        swap = quarter_turns % 2 == 1
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(
            uri=uri,
            fps=fps,
            time_base=Fraction(stream.time_base),
            num_frames=stream.frames or None,
            width=first.height if swap else first.width,
            height=first.width if swap else first.height,
            rotation=(-90 * quarter_turns) % 360,
            has_audio=bool(container.streams.audio),
            duration=duration,
            colour=Colour.of(first),
        )


def iter_timed_frames(uri: str) -> Iterator[tuple[np.ndarray, Fraction]]:
    """Yield (upright RGB uint8 frame [H, W, 3], presentation time in seconds) one frame at a time, in display
    order; raise VideoError on a truncated or corrupt file. A frame without a timestamp gets the previous
    frame's time plus one frame at the stream's average rate."""
    uri = str(uri)
    with open_container(uri) as container:
        stream = container.streams.video[0]
        expected = stream.frames or None
        count, time = 0, None
        for frame in _decoded(container, uri, threaded=True):
            count += 1
            if frame.pts is not None and frame.time_base:
                time = frame.pts * Fraction(frame.time_base)
            elif time is None:
                time = Fraction(0)
            elif rate := _frame_rate(stream):
                time += 1 / rate
            else:
                raise VideoError(f"{uri}: its frames carry no timestamps and its frame rate is unknown")
            yield _upright(frame), time
    if count == 0:
        raise VideoError(f"{uri}: the video stream has no decodable frame")
    if expected is not None and count < expected - TRUNCATION_SLACK:
        raise VideoError(f"{uri}: truncated: only {count} of the {expected} indexed frames could be decoded")


def iter_frames(uri: str) -> Iterator[np.ndarray]:
    """Yield upright RGB uint8 frames [H, W, 3] one at a time; raise VideoError on a truncated or corrupt file."""
    return (frame for frame, _ in iter_timed_frames(uri))


def stack_chunks(frames: Iterable[np.ndarray], chunk_len: int) -> Iterator[np.ndarray]:
    """Stack any frame (or crop) stream into arrays [n, H, W, 3] of `chunk_len` items (the last may be shorter)."""
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == chunk_len:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def iter_chunks(uri: str, chunk_len: int) -> Iterator[np.ndarray]:
    """The video's upright frames in chunks [n, H, W, 3] of `chunk_len` (the last may be shorter)."""
    return stack_chunks(iter_frames(uri), chunk_len)
