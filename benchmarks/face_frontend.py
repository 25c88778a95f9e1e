"""Frames per second of the face front end on CPU, per landmark backend, on a synthetic 720p sample clip.

Measures (1) decode + detect + align + crop: both streaming passes of `crop_video` without writing, and
(2) paste + encode: feathered paste of every crop into its frame and H.264 encoding with the source audio
(decoding excluded, timed separately). Backends without configured weights are skipped with the reason.

    python benchmarks/face_frontend.py [--frames 48] [--size 1280x720] [--backends dlib,fan,insightface] \
        [fan.weights=... fan.detector_weights=... insightface.detector_weights=...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dva.errors import MissingWeightsError
from dva.face import build_landmarker, face_mask, iter_crops, load_face_config, paste_face, to_crop_coords
from dva.face import track_faces, track_quads
from dva.samples import make_sample_clip
from dva.video import VideoWriter, iter_frames, probe


def _timed(iterator):
    """Yield (item, seconds spent producing it)."""
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item, time.perf_counter() - start


def bench_backend(clip: str, backend: str, overrides: list[str], out_dir: Path) -> dict[str, float] | str:
    cfg = load_face_config("dlib", [f"backend={backend}", *overrides])
    try:
        landmarker = build_landmarker(cfg)
    except MissingWeightsError as err:
        return f"skipped: {err}"
    info = probe(clip)
    start = time.perf_counter()
    track = track_faces(iter_frames(clip), landmarker, cfg.track, name=clip)
    quads = track_quads(track.points, cfg.align)
    crops = list(iter_crops(iter_frames(clip), quads, cfg.align.crop_size))  # 256^2 crops: small enough to keep
    frontend = time.perf_counter() - start

    paste = encode = decode = 0.0
    with VideoWriter(out_dir / f"{backend}.mp4", info.fps, audio_from=clip) as writer:
        for index, (frame, seconds) in enumerate(_timed(iter_frames(clip))):
            decode += seconds
            start = time.perf_counter()
            size = cfg.align.crop_size
            mask = face_mask(crops[index], to_crop_coords(track.points[index], quads[index], size), cfg.mask)
            pasted = paste_face(frame, crops[index], quads[index], mask, cfg.mask)
            paste += time.perf_counter() - start
            start = time.perf_counter()
            writer.write(pasted)
            encode += time.perf_counter() - start
        start = time.perf_counter()
    encode += time.perf_counter() - start  # flush + audio mux at close
    n = len(crops)
    return {"decode+detect+align+crop": n / frontend, "paste+encode": n / (paste + encode),
            "paste": n / paste, "encode": n / encode, "decode": n / decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--backends", default="dlib,fan,insightface")
    parser.add_argument("overrides", nargs="*", help="face config key=value overrides (weight paths)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="dva-bench-") as tmp:
        clip = make_sample_clip(Path(tmp) / "clip.mp4", "grace_hopper", frames=args.frames, size=(width, height),
                                blinks=True, audio=True)
        print(f"clip: {args.frames} frames {width}x{height}, face box ~{int(0.45 * min(width, height))} px, CPU")
        for backend in args.backends.split(","):
            result = bench_backend(clip, backend, args.overrides, Path(tmp))
            if isinstance(result, str):
                print(f"{backend:12s} {result}")
            else:
                print(f"{backend:12s} " + "  ".join(f"{k} {v:6.1f} fps" for k, v in result.items()))


if __name__ == "__main__":
    main()
