"""Carrying a source file's audio into an output mp4: packet copy where mp4 can hold the codec, else AAC.

The output is written while video frames stream in, so audio is produced as a time-ordered packet iterator that
the writer interleaves with the video packets; nothing is decoded or held beyond one packet (copy) or one frame
(re-encode).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import av

from dva.errors import VideoError

# Audio codecs the mp4 muxer accepts as they are; anything else (PCM, Vorbis, AMR, ...) is re-encoded to AAC.
MP4_COPY_CODECS = frozenset({"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"})
_LAYOUT_BY_CHANNELS = {1: "mono", 2: "stereo"}


class AudioSource:
    """The first audio stream of an opened input container, added to `output` as a copied or AAC stream."""

    def __init__(self, container: av.container.InputContainer, output: av.container.OutputContainer, name: str):
        self.name = name
        self._container = container
        self._input = container.streams.audio[0]
        self.copy = self._input.codec_context.name in MP4_COPY_CODECS
        if self.copy:
            self.stream = output.add_stream_from_template(self._input)
        else:
            self.stream = output.add_stream("aac", rate=self._input.rate)
            self.stream.layout = _LAYOUT_BY_CHANNELS.get(self._input.channels, self._input.layout.name)

    def packets(self) -> Iterator[av.Packet]:
        """Output-ready packets in presentation order, ending with the encoder's flush when re-encoding."""
        try:
            if self.copy:
                for packet in self._container.demux(self._input):
                    if packet.dts is None:  # demuxer's end-of-stream marker
                        continue
                    packet.stream = self.stream
                    yield packet
            else:
                samples = None
                for frame in self._container.decode(self._input):
                    # Count samples from the first frame's time rather than trust every timestamp (WAV/PCM often
                    # has none or gaps); the start keeps any offset between the audio and the video.
                    if samples is None:
                        samples = round((frame.time or 0) * frame.sample_rate)
                    frame.pts, frame.time_base = samples, Fraction(1, frame.sample_rate)
                    samples += frame.samples
                    yield from self.stream.encode(frame)
                yield from self.stream.encode(None)
        except av.FFmpegError as err:
            raise VideoError(f"{self.name}: cannot read its audio ({err.strerror or err})") from None
