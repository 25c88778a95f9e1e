"""Streaming H.264 (libx264, yuv420p) mp4 writer, with the source's audio, timestamps and colour tags carried over.

Frames arrive one at a time and leave as packets at once, so memory does not grow with video length. Each frame
is written at the time it is given (a variable-rate source keeps its timing; without times, frames are spaced at
`fps`); copied audio keeps its source times, so any offset between the streams stays as it was. With a `Colour`
the RGB frames are converted with the source's matrix and range, and the stream is tagged with all four tags.
The same frames and settings always give a byte-identical file. The file is staged and only appears at its target
(local path or s3://) when `close()` succeeds; an exception inside a `with` block, or `abort()`, leaves nothing
behind.

yuv420p needs even sizes: an odd width or height is padded by one replicated row/column (333x197 is stored as
334x198). The mp4 is written with its index first (faststart) so it streams from object stores.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dva.errors import VideoError
from dva.storage import atomic_output
from dva.video.audio import AudioSource
from dva.video.decode import Colour, open_container

# swscale's RGB→YUV matrices (SWS_CS_*) by the AVColorSpace that names them; any other matrix tag is converted
# with swscale's default (BT.601) and written untagged, so the tag never contradicts the pixels.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_UNTAGGED_MATRIX = 2


class VideoWriter:
    """Write RGB uint8 frames [H, W, 3] to an mp4 at `fps`; optionally copy `audio_from`'s first audio stream.

    `time_base` (default 1/fps) is the stream's clock: give the source's so source times are kept exactly.
    `colour`: the source's tags (`VideoInfo.colour`); None writes untagged BT.601 limited range.

    `rotation` (clockwise degrees, as `VideoInfo.rotation`) is stored as display metadata only; frames are written
    as given. Outputs of the editing pipeline are upright already and keep the default 0.
    """

    def __init__(
        self,
        uri: str | Path,
        fps: Fraction | float,
        *,
        audio_from: str | None = None,
        crf: int = 18,
        preset: str = "medium",
        rotation: int = 0,
        time_base: Fraction | None = None,
        colour: Colour | None = None,
    ):
        self.uri = str(uri)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self.colour = colour or Colour()
        self._matrix = _SWS_MATRIX.get(self.colour.matrix)
        self._last_pts: int | None = None
        self.crf = crf
        self.preset = preset
        self.rotation = rotation
        self.frames_written = 0
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the frames given, before padding
        self._audio_from = audio_from
        self._target = atomic_output(self.uri, ".mp4")  # committed by close(), dropped by abort()
        path = self._target.__enter__()
        self._stack = contextlib.ExitStack()  # the open containers: output, then the audio source
        self._open = True
        try:
            self._output = self._stack.enter_context(
                av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
            )
        except BaseException:
            self.abort()
            raise
        self._video: av.VideoStream | None = None
        self._audio_packets = iter(())
        self._next_audio: av.Packet | None = None

    def _start(self, width: int, height: int) -> None:
        self.frame_size = (width, height)
        stream = self._output.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = stream.time_base = self.time_base
        context = stream.codec_context  # libx264 writes these into the bitstream, the muxer into the mp4's colr box
        context.color_primaries, context.color_trc = self.colour.primaries, self.colour.transfer
        context.colorspace = self.colour.matrix if self._matrix else _UNTAGGED_MATRIX
        context.color_range = self.colour.range
        # One encoder thread: a job gets its parallelism from encoding many videos at once (each writer task
        # reserves one CPU).
        # No MB-tree: its AVX-512 code reads memory it never wrote when the width is not a multiple of 8
        # macroblocks (320, 480, 481 wide...), so the same frames gave a different file on every encode.
        stream.options = {"crf": str(self.crf), "preset": self.preset, "threads": "1",
                          "x264-params": "mbtree=0"}
        if self.rotation:
            stream.set_display_rotation(-self.rotation)  # PyAV counts counter-clockwise
        self._video = stream
        if self._audio_from is not None:
            source = self._stack.enter_context(open_container(self._audio_from, need_video=False))
            if source.streams.audio:
                self._audio_packets = AudioSource(source, self._output, self._audio_from).packets()
                self._next_audio = next(self._audio_packets, None)

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Mux audio packets that start before `seconds` (all remaining ones for None), keeping the file interleaved."""
        while self._next_audio is not None and (
            seconds is None or float(self._next_audio.dts * self._next_audio.time_base) <= seconds
        ):
            self._output.mux(self._next_audio)
            self._next_audio = next(self._audio_packets, None)

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._mux_audio_until(float(packet.dts * packet.time_base))
            self._output.mux(packet)

    @contextlib.contextmanager
    def _aborting_on_error(self, doing: str):
        """Drop the output on any error; FFmpeg's errors become a VideoError that says what was being done."""
        try:
            yield
        except av.FFmpegError as err:
            self.abort()
            raise VideoError(f"{self.uri}: cannot {doing} ({err.strerror or err})") from None
        except BaseException:
            self.abort()
            raise

    def _next_pts(self, time: Fraction | None) -> int:
        """The frame's timestamp in `time_base` ticks: its time, or the next slot at `fps`; always increasing."""
        if time is None:
            pts = round(self.frames_written / (self.fps * self.time_base))
        else:
            pts = round(Fraction(time) / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # repeated source timestamps: the encoder needs increasing ones
        self._last_pts = pts
        return pts

    def _yuv(self, frame: np.ndarray) -> av.VideoFrame:
        # One swscale thread, as for the encoder: the writer task reserves one CPU.
        return av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=self._matrix, dst_color_range=self.colour.range or None, threads=1)

    def write(self, frame: np.ndarray, time: Fraction | None = None) -> None:
        """Encode one frame shown at `time` seconds (None: the next slot at `fps`); every frame must have the
        size of the first."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame [H, W, 3], got {frame.dtype} {frame.shape}")
        if not self._open:
            raise VideoError(f"{self.uri}: the writer is already closed")
        height, width = frame.shape[:2]
        with self._aborting_on_error(f"encode frame {self.frames_written}"):
            if self._video is None:
                self._start(width, height)
            if (width, height) != self.frame_size:
                raise VideoError(f"{self.uri}: frame {self.frames_written} is {width}x{height}, "
                                 f"the video is {self.frame_size[0]}x{self.frame_size[1]}")
            if width % 2 or height % 2:
                frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            video_frame = self._yuv(np.ascontiguousarray(frame))
            video_frame.pts = self._next_pts(time)
            video_frame.time_base = self.time_base
            self._mux_video(self._video.encode(video_frame))
        self.frames_written += 1

    def write_chunk(self, frames: np.ndarray) -> None:
        """Encode frames [n, H, W, 3] in order."""
        for frame in frames:
            self.write(frame)

    def close(self) -> None:
        """Flush the encoder, mux the rest of the audio and commit the file to its target."""
        if not self._open:
            return
        if self.frames_written == 0:
            self.abort()
            raise VideoError(f"{self.uri}: no frames were written")
        with self._aborting_on_error("finish the video"):
            self._mux_video(self._video.encode(None))
            self._mux_audio_until(None)
            self._stack.close()
        self._open = False
        self._target.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop everything written so far; the target is left untouched."""
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(Exception):
            self._stack.close()
        # Leaving atomic_output by an exception deletes the temporary file and leaves the target as it was.
        aborted = VideoError(f"{self.uri}: aborted")
        self._target.__exit__(VideoError, aborted, None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
