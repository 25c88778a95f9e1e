"""Stage C without Ray: each output frame at its source frame's time, the audio offset and colour tags kept, and
the paste region taken from the face parser when the model has one."""

from __future__ import annotations

import io
import time
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from dva.crops import crops_to_tensor
from dva.face import load_face_config
from dva.face.mask import landmark_hull_mask
from dva.face.record import AlignedTrack
from dva.face.track import FrameStatus
from dva.face.warp import crop_face
from dva.models.config import EncoderConfig
from dva.models.reference.bisenet import build_face_parser, paste_mask
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import _finalize_pair
from dva.pipeline.finalize import finalize_video, paste_masker
from dva.pipeline.generate import work_uri
from dva.latents import LatentKey, LatentStore
from dva.storage import write_bytes_atomic
from dva.video import Colour, iter_frames, probe
from standin_weights import write_bisenet

WIDTH, HEIGHT, CROP = 96, 64, 32
QUAD = np.array([[32, 16], [32, 48], [64, 48], [64, 16]], np.float64)  # a 32 px square: crop pixels = frame pixels
BT709 = Colour(primaries=1, transfer=1, matrix=1, range=1)
FULL_RANGE_601 = Colour(primaries=6, transfer=6, matrix=6, range=2)
_SWS = {1: 1, 6: 5}  # swscale's matrix numbers for the tags above


def _frame(i: int) -> np.ndarray:
    """Saturated bars that move, so a wrong matrix or range shows as a colour error."""
    bars = np.array([[230, 30, 30], [30, 200, 40], [40, 50, 220], [240, 240, 20], [20, 20, 20], [250, 250, 250]])
    columns = (np.arange(WIDTH) // 16 + i) % len(bars)
    return np.repeat(bars[columns][None], HEIGHT, axis=0).astype(np.uint8)


def write_source(path: str, times: list[Fraction], *, colour: Colour | None = None, audio_start: float | None = None,
                 audio_codec: str = "aac", time_base: Fraction = Fraction(1, 90000)) -> str:
    """A clip (written with plain PyAV) showing frame i at times[i] seconds, optionally tagged with `colour`, with a
    tone that starts at `audio_start` seconds."""
    with av.open(path, "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.time_base = video.time_base = time_base
        if colour is not None:
            ctx = video.codec_context
            ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = (
                colour.primaries, colour.transfer, colour.matrix, colour.range)
        if audio_start is not None:
            rate = 16000
            audio = out.add_stream(audio_codec, rate=rate)
            audio.layout = "mono"
        for i, time in enumerate(times):
            frame = av.VideoFrame.from_ndarray(_frame(i), format="rgb24")
            if colour is not None:
                frame = frame.reformat(format="yuv420p", dst_colorspace=_SWS[colour.matrix],
                                       dst_color_range=colour.range)
            frame.pts, frame.time_base = round(time / time_base), time_base
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if audio_start is not None:
            fmt = "fltp" if audio_codec == "aac" else "s16"
            start, step = round(audio_start * rate), 1024
            for k in range(int(float(times[-1]) * rate / step) + 2):
                t = (start + k * step + np.arange(step)) / rate
                tone = (0.3 * np.sin(2 * np.pi * 440 * t))[None]
                frame = av.AudioFrame.from_ndarray(tone.astype(np.float32) if fmt == "fltp"
                                                   else (tone * 32767).astype(np.int16), format=fmt, layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, start + k * step, Fraction(1, rate)
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode(None):
                out.mux(packet)
    return path


def _face_points() -> np.ndarray:
    """68 landmarks in frame pixels: a jaw arc and brows inside QUAD (the hull mask needs only these two)."""
    points = np.full((68, 2), (48.0, 34.0))
    angles = np.linspace(np.pi, 0, 17)
    points[:17] = np.stack([48 - 11 * np.cos(angles), 30 + 14 * np.sin(angles)], 1)
    points[17:27] = np.stack([np.linspace(39, 57, 10), np.full(10, 26.0)], 1)
    return points


def stage_c_inputs(output: str, source: str, video_id: str, edit: str, status: list[int],
                   edited_colour=(255, 0, 255)) -> dict[int, int]:
    """Store the face track and one chunk of edited crops (one flat colour, one per frame from the first to the last
    face) as stages A and B leave them."""
    n = len(status)
    track = AlignedTrack(source=source, fps=Fraction(30), frame_size=(WIDTH, HEIGHT), crop_size=CROP,
                         points=np.repeat(_face_points()[None], n, 0).astype(np.float32),
                         status=np.array(status, np.uint8), quads=np.repeat(QUAD[None], n, 0))
    store = LatentStore(output, video_id)
    store.save_tracks([track], [(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))], {})
    store.commit_tracks(LatentKey("m", 1, 1), 1, source, "")
    buf = io.BytesIO()
    edited = (len(track.face_frames), CROP, CROP, 3)
    np.save(buf, np.broadcast_to(np.array(edited_colour, np.uint8), edited).copy(), allow_pickle=False)
    write_bytes_atomic(work_uri(output, video_id, edit, 0, 0), buf.getvalue())
    return {0: 1}


def _times(path: str) -> tuple[list[Fraction], list[float], Fraction]:
    """Video frame times, audio frame times (both as decoded, edit lists applied) and the video stream's tick."""
    with av.open(path) as c:
        video = [Fraction(f.pts) * f.time_base for f in c.decode(video=0)]
        tick = Fraction(c.streams.video[0].time_base)
    with av.open(path) as c:
        audio = [f.time for f in c.decode(audio=0)] if c.streams.audio else []
    return video, audio, tick


def _vfr_times(n: int, start: Fraction = Fraction(0)) -> list[Fraction]:
    """Alternating 30 and 15 fps, as phones write when the light drops."""
    times, t = [], start
    for i in range(n):
        times.append(t)
        t += Fraction(1, 30) if i % 2 == 0 else Fraction(1, 15)
    return times


@pytest.mark.parametrize("container, audio_codec, audio_slack", [("mp4", "aac", 1 / 16000),
                                                                  ("mkv", "pcm_s16le", 1024 / 16000)],
                         ids=["mp4-aac-copied", "mkv-pcm-reencoded"])
def test_output_frames_keep_source_times_and_audio_offset(tmp_path, container, audio_codec, audio_slack):
    """A 30/15 fps alternating clip whose audio starts 0.25 s after the video: every output frame is shown when its
    source frame was (within one tick), and the audio starts where it did (an AAC re-encode may add its one-frame
    priming before it)."""
    times = _vfr_times(12, start=Fraction(1, 10))
    source = write_source(str(tmp_path / f"vfr.{container}"), times, audio_start=0.35, audio_codec=audio_codec)
    output = str(tmp_path / "out")
    status = [FrameStatus.HELD] * 2 + [FrameStatus.DETECTED] * 10
    chunks = stage_c_inputs(output, source, "vid", "reconstruct", status)
    target, frames, _ = finalize_video(output, source, "vfr.mp4", "vid", "reconstruct", chunks,
                                       load_face_config("dlib"))
    src_video, src_audio, _ = _times(source)
    out_video, out_audio, tick = _times(target)
    assert frames == len(out_video) == len(src_video) == 12
    assert max(abs(a - b) for a, b in zip(out_video, src_video)) <= tick
    assert out_audio and abs(out_audio[0] - src_audio[0]) <= audio_slack + 1e-6
    assert abs((out_audio[0] - float(out_video[0])) - (src_audio[0] - float(src_video[0]))) <= audio_slack + 1e-6


@pytest.mark.parametrize("colour", [BT709, FULL_RANGE_601], ids=["bt709", "full-range-bt601"])
def test_output_carries_the_source_colour_tags_and_colours(tmp_path, colour):
    source = write_source(str(tmp_path / "tagged.mp4"), [Fraction(i, 30) for i in range(6)], colour=colour)
    assert probe(source).colour == colour
    output = str(tmp_path / "out")
    chunks = stage_c_inputs(output, source, "vid", "reconstruct", [FrameStatus.HELD] * 6)
    target, _, _ = finalize_video(output, source, "tagged.mp4", "vid", "reconstruct", chunks,
                                  load_face_config("dlib"))
    assert probe(target).colour == colour
    with av.open(target) as out:
        decoded = [f.to_ndarray(format="rgb24").astype(int) for f in out.decode(video=0)]
    # Converted with the matrix and range it is tagged with: colours come back as they went in.
    assert all(np.abs(d - _frame(i)).mean() < 4 for i, d in enumerate(decoded))


def test_stage_c_pastes_inside_the_face_parsers_paste_classes(tmp_path):
    """A model with a face parser (a stand-in 79999_iter.pth, random but in the reference format): stage C pastes
    the edit where the parser's paste classes are on the original crop, not inside the landmark hull."""
    weights = write_bisenet(tmp_path / "79999_iter.pth")
    parser_cfg = EncoderConfig(kind="reference_bisenet", weights=str(weights))
    cfg = load_job_config(EditJobConfig, "local_tiny", ["random_weights=true", f"output={tmp_path / 'out'}",
                                                         "input=unused/", "face.mask.dilate_px=0",
                                                         "face.mask.blur_px=0"])
    assert paste_masker(cfg.model) is None  # no parser: the hull
    cfg = replace(cfg, model=replace(cfg.model, face_parser=parser_cfg))
    source = write_source(str(tmp_path / "face.mp4"), [Fraction(i, 30) for i in range(3)])
    chunks = stage_c_inputs(cfg.output, source, "vid", "reconstruct", [FrameStatus.DETECTED] * 3)

    row = _finalize_pair(cfg, source, "face.mp4", "vid", "reconstruct", chunks, time.time(), "fingerprint")
    assert row["status"] == "ok", row["error"]

    parser = build_face_parser(parser_cfg, "model.face_parser")
    hull = landmark_hull_mask(_face_points() - QUAD[0], CROP, cfg.face.mask.brow_lift)
    magenta = np.array([255, 0, 255])
    (x0, y0), (x1, y1) = QUAD[0].astype(int), QUAD[2].astype(int)
    for original, edited in zip(iter_frames(source), iter_frames(row["output"]), strict=True):
        with torch.no_grad():
            classes = parser.classes(crops_to_tensor(crop_face(original, QUAD, CROP)[None]))
        expected = paste_mask(classes)[0].numpy()
        assert 0.1 < expected.mean() < 0.9 and (expected != hull).mean() > 0.2  # a test that can tell them apart
        region, before = edited[y0:y1, x0:x1].astype(int), original[y0:y1, x0:x1].astype(int)
        pasted = np.abs(region - magenta).sum(-1) < np.abs(region - before).sum(-1)
        assert (pasted == expected).mean() > 0.9
        assert (pasted == hull).mean() < 0.7
