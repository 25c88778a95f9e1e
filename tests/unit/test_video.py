"""Streaming decode/encode: frame count, rate, duration, audio, rotation, odd sizes and every bad-input path."""

from __future__ import annotations

from fractions import Fraction

import av
import fsspec
import numpy as np
import pytest

from dva.errors import VideoError
from dva.video import VideoWriter, iter_chunks, iter_frames, iter_timed_frames, probe


def _reencode(src: str, dst: str, **kwargs) -> None:
    info = probe(src)
    with VideoWriter(dst, info.fps, audio_from=src, **kwargs) as out:
        for frame in iter_frames(src):
            out.write(frame)


def _audio_codec_and_seconds(path: str) -> tuple[str, float]:
    with av.open(path) as c:
        stream = c.streams.audio[0]
        return stream.codec_context.name, float(stream.duration * stream.time_base)


def test_reencode_keeps_frame_count_rate_duration_and_audio(sample_clip, tmp_path):
    src = sample_clip("astronaut", frames=16, fps=25, audio=True, blinks=True)
    info = probe(src)
    assert (info.num_frames, info.fps, info.size, info.rotation, info.has_audio) == (16, 25, (320, 240), 0, True)
    dst = str(tmp_path / "out.mp4")
    _reencode(src, dst)
    out = probe(dst)
    assert out.fps == info.fps and out.has_audio
    assert abs(out.num_frames - info.num_frames) <= 1
    assert abs(out.duration - info.duration) <= 1 / float(info.fps)
    assert sum(1 for _ in iter_frames(dst)) == 16
    src_codec, src_seconds = _audio_codec_and_seconds(src)
    dst_codec, dst_seconds = _audio_codec_and_seconds(dst)
    assert src_codec == dst_codec == "aac"  # AAC is copied packet for packet
    assert dst_seconds == pytest.approx(src_seconds, abs=0.03)


def test_video_without_audio_gives_output_without_audio(sample_clip, tmp_path):
    src = sample_clip("grace_hopper", frames=8)
    assert not probe(src).has_audio
    dst = str(tmp_path / "out.mp4")
    _reencode(src, dst)
    assert not probe(dst).has_audio and probe(dst).num_frames == 8


def test_non_mp4_audio_is_reencoded_to_aac(sample_clip, tmp_path):
    """The sample's tone starts as a 16-bit PCM WAV, which mp4 cannot carry as is."""
    src = sample_clip("astronaut", frames=16, fps=25, audio=True, blinks=True)
    codec, seconds = _audio_codec_and_seconds(src)
    assert codec == "aac" and seconds == pytest.approx(16 / 25, abs=0.05)


def test_odd_size_is_padded_to_even(sample_clip):
    path = sample_clip("astronaut", frames=4, size=(333, 197))
    info = probe(path)
    assert info.size == (334, 198)
    frame = next(iter_frames(path))
    # the padding replicates the last column/row, so it differs from its neighbour only by coding noise
    assert np.abs(frame[:, -1].astype(int) - frame[:, -2]).mean() < 4
    assert np.abs(frame[-1].astype(int) - frame[-2]).mean() < 4


def test_portrait_rotation_metadata_gives_upright_frames(sample_clip):
    upright = sample_clip("astronaut", frames=4, size=(160, 120))
    rotated = sample_clip("astronaut", frames=4, size=(160, 120), rotation=90)
    info = probe(rotated)
    assert info.rotation == 90 and info.size == (160, 120)
    for a, b in zip(iter_frames(upright), iter_frames(rotated)):
        assert a.shape == b.shape == (120, 160, 3)
        assert np.abs(a.astype(int) - b).mean() < 3  # same picture, coded in another orientation


def test_one_frame_video_round_trips(sample_clip, tmp_path):
    src = sample_clip("astronaut", frames=1)
    info = probe(src)
    assert info.num_frames == 1 and info.fps == 25
    dst = str(tmp_path / "one.mp4")
    _reencode(src, dst)
    assert sum(1 for _ in iter_frames(dst)) == 1


def test_chunks_have_the_requested_length(sample_clip):
    chunks = list(iter_chunks(sample_clip("grace_hopper", frames=8), 3))
    assert [len(c) for c in chunks] == [3, 3, 2] and chunks[0].shape == (3, 240, 320, 3)


def test_fsspec_uris_read_and_write(sample_clip):
    src = sample_clip("grace_hopper", frames=8)
    with open(src, "rb") as f, fsspec.open("memory://dva-test/in.mp4", "wb") as g:
        g.write(f.read())
    info = probe("memory://dva-test/in.mp4")
    assert info.num_frames == 8 and info.size == (320, 240)
    frames = list(iter_frames("memory://dva-test/in.mp4"))
    with VideoWriter("memory://dva-test/out.mp4", info.fps) as out:
        out.write_chunk(np.stack(frames))
    assert probe("memory://dva-test/out.mp4").num_frames == 8


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"this is a text file, not a video\n" * 20, "cannot be opened as a video")],
    ids=["zero-byte", "non-video"],
)
def test_bad_files_raise_video_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=message) as err:
        probe(str(path))
    assert str(path) in str(err.value)
    with pytest.raises(VideoError, match=message):
        next(iter_frames(str(path)))


def test_missing_and_audio_only_files(tmp_path, sample_clip):
    with pytest.raises(VideoError, match="does not exist"):
        probe(str(tmp_path / "nope.mp4"))
    wav = tmp_path / "tone.wav"
    from dva.samples import _write_tone

    _write_tone(wav, 0.2)
    with pytest.raises(VideoError, match="no video stream"):
        probe(str(wav))


def test_truncated_mp4(sample_clip, tmp_path):
    """Index cut off: cannot open. Data cut off: frames up to the cut, then VideoError (documented in decode.py)."""
    data = open(sample_clip("grace_hopper", frames=8), "rb").read()
    head = tmp_path / "head.mp4"
    head.write_bytes(data[:200])
    with pytest.raises(VideoError, match="truncated, corrupt or not a video"):
        probe(str(head))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 4])
    assert probe(str(cut)).num_frames == 8
    decoded = 0
    with pytest.raises(VideoError, match="truncated: only|corrupt video data"):
        for _ in iter_frames(str(cut)):
            decoded += 1
    assert 0 < decoded < 8


def test_failed_write_leaves_nothing(tmp_path):
    frame = np.zeros((64, 64, 3), np.uint8)
    target = tmp_path / "out" / "video.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, Fraction(25)) as out:
            out.write(frame)
            raise RuntimeError("job killed")
    with pytest.raises(VideoError, match="frame 1 is 32x64"):
        with VideoWriter(target, Fraction(25)) as out:
            out.write(frame)
            out.write(frame[:, :32])
    with pytest.raises(VideoError, match="no frames"):
        VideoWriter(target, 25).close()
    assert list(target.parent.iterdir()) == []


def _textured_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    """Moving gradients with grain: enough motion and detail for x264's lookahead to have work."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        base = np.sin(xx / 17 + i) * 60 + np.cos(yy / 23 - i) * 60 + 128
        image = np.stack([base, np.roll(base, 5 * i, axis=1), 255 - base], -1) + rng.normal(0, 8, (height, width, 3))
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


@pytest.mark.parametrize("size", [(480, 640), (481, 321), (320, 240)], ids=["portrait-480x640", "odd-481x321",
                                                                           "320x240"])
def test_same_frames_give_byte_identical_files(tmp_path, size):
    """Widths that are not a multiple of 8 macroblocks (320, 480, 482 px) made x264's AVX-512 MB-tree code read
    memory it never wrote: before the fix nearly every repeat encode in one process differed (max pixel difference
    ~30), so four encodes caught it on every run on an AVX-512 CPU (a CPU without AVX-512 never showed it)."""
    frames = _textured_frames(*size, count=10)
    files = []
    for run in range(4):
        path = tmp_path / f"run{run}.mp4"
        with VideoWriter(path, Fraction(30)) as out:
            out.write_chunk(np.stack(frames))
        files.append(path.read_bytes())
    assert all(f == files[0] for f in files[1:])


def test_frames_without_timestamps_are_timed_at_the_stream_rate(tmp_path):
    """A raw H.264 stream carries no timestamps: its frames follow one another at the stream's rate."""
    path = str(tmp_path / "raw.h264")
    with av.open(path, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert [time for _, time in iter_timed_frames(path)] == [Fraction(i, 25) for i in range(4)]


def test_writer_keeps_given_times_and_makes_repeated_ones_increase(tmp_path):
    path = tmp_path / "timed.mp4"
    frame = np.zeros((48, 64, 3), np.uint8)
    with VideoWriter(path, Fraction(30), time_base=Fraction(1, 600)) as out:
        for time in (Fraction(1, 10), Fraction(1, 10), Fraction(1, 5), Fraction(1, 2)):
            out.write(frame, time)
    assert [t for _, t in iter_timed_frames(str(path))] == [Fraction(1, 10), Fraction(1, 10) + Fraction(1, 600),
                                                           Fraction(1, 5), Fraction(1, 2)]
