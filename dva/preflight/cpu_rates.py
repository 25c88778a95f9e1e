"""Measured CPU cost of the edit job's CPU stages, the basis of the plan's CPU-hour estimate (beside `gpu_rates.py`).

Stage A (the face front end): benchmarks/results/face_frontend_cpu_2026-12-01b.txt (benchmarks/face_frontend.py,
process CPU ms per frame, each face preset as `configs/edit/cluster_gpu.yaml` runs it: fan_tracked's networks on a
GPU share, their host side only; z_id by ArcFace on ONNX Runtime on the CPU, z_lnd by FAN; at 1280x720 and
1920x1080; a 2-core machine shared with other processes: read the large parts as ±50 %). Stage C (paste + H.264
encode): README "Performance", ≈ 17 frames/s per writer CPU at 720p, and ≈ 0.5 CPU-s per pasted face frame for a
face parser (BiSeNet, one thread, 256² crops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

FRONTEND_SOURCE = "benchmarks/results/face_frontend_cpu_2026-12-01b.txt"
WRITER_SOURCE = "README \"Performance\""


@dataclass(frozen=True)
class FrontEndRate:
    """CPU ms of each part of stage A, as measured: a decode of one frame, the detector per frame (already
    divided by the preset's `detect_every`), and per face in a frame its landmarks, one crop, z_id and z_lnd."""

    decode: float
    detect: float
    landmarks: float
    crop: float
    z_id: float
    z_lnd: float

    def find_tracks_ms(self, frames: float, face_frames: float) -> float:
        """Passes 1-3 of a video whose tracks are found: three decodes and a detection per frame; landmarks, two
        crops, z_id and z_lnd per face frame."""
        return frames * (3 * self.decode + self.detect) + face_frames * (
            self.landmarks + 2 * self.crop + self.z_id + self.z_lnd)

    def crop_again_ms(self, frames: float, face_frames: float) -> float:
        """Pass 3 alone (the tracks are stored, some x_T is not): one decode per frame, one crop per face frame."""
        return frames * self.decode + face_frames * self.crop


# face preset → (width, height) measured → rate. From the file's per-part lines (detect "x 0.1": detect_every 10).
FRONTEND_MS: dict[str, dict[tuple[int, int], FrontEndRate]] = {
    "dlib": {(1280, 720): FrontEndRate(6.37, 15.41, 1.11, 1.39, 76.09, 1.24),
             (1920, 1080): FrontEndRate(12.83, 16.45, 1.31, 2.24, 103.18, 1.24)},
    "fan": {(1280, 720): FrontEndRate(6.36, 4373.43, 497.58, 1.63, 76.09, 1.24),
            (1920, 1080): FrontEndRate(14.03, 10379.26, 4235.31, 2.16, 103.18, 1.24)},
    "fan_tracked": {(1280, 720): FrontEndRate(6.70, 0.22, 45.75, 0.97, 117.27, 1.24),
                    (1920, 1080): FrontEndRate(12.38, 1.35, 5.49, 1.68, 111.54, 1.24)},
    "scrfd": {(1280, 720): FrontEndRate(6.82, 35.98, 293.34, 1.07, 117.27, 1.24),
              (1920, 1080): FrontEndRate(13.19, 22.89, 325.62, 1.76, 111.54, 1.24)},
}

WRITER_FRAMES_PER_CPU_S = 17.0  # stage C output frames per writer CPU-second at WRITER_SIZE
WRITER_SIZE = (1280, 720)
FACE_PARSER_CPU_S = 0.5  # per pasted face frame, when the model has a face parser


def frontend_rate(face_preset: str, size: tuple[int, int]) -> Optional[tuple[FrontEndRate, tuple[int, int]]]:
    """The measured rate of `face_preset` at the measured size nearest `size` in pixels, and that size; None for a
    preset that was not measured."""
    rates = FRONTEND_MS.get(face_preset)
    if rates is None:
        return None
    measured = min(rates, key=lambda wh: abs(wh[0] * wh[1] - size[0] * size[1]))
    return rates[measured], measured


def writer_cpu_s(frames: float, size: tuple[int, int], pasted_face_frames: float, face_parser: bool) -> float:
    """Stage C CPU-seconds of one (video, edit): paste + encode of every frame, scaled from the 720p rate by the
    frame's pixels, plus the face parser on each pasted face frame."""
    scale = size[0] * size[1] / (WRITER_SIZE[0] * WRITER_SIZE[1])
    return frames * scale / WRITER_FRAMES_PER_CPU_S + (pasted_face_frames * FACE_PARSER_CPU_S if face_parser else 0.0)
