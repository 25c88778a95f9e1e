"""CPU cost of stage A's face front end per frame, per back end, as a job config runs it; frames/s per CPU core and
per actor; GPU cost of its networks estimated from their FLOPs.

For each face preset (with the job's model encoders and `frontend` resources), on a synthetic sample clip at each
size, it times with process CPU time, the median of repeated calls (the machine may be shared; all threads count):
- decode: one decoding pass of a frame (the edit job decodes each frame 3 times, preprocessing 2);
- detect: one detector call (`FaceLandmarker.detect`) on a frame, counted once every `track.detect_every` frames;
- landmarks: the 68 points in a given box (`FaceLandmarker.landmarks`), every frame;
- crop: one aligned crop (`iter_crops`; 2 passes crop in the edit job, 1 in preprocessing);
- z_id, z_lnd: the model's encoders on a chunk of crops, per frame.
Weight files that do not exist here are stand-ins of the real architectures with random weights (`dva.standins`):
speed does not depend on weight values. A stand-in detector finds no face, so `detect` is the detector alone; the
landmarks of the found face are in `landmarks`. dlib's real models ship in the venv.

A network configured on cuda (`fan.device`, and the model's torch encoders when `frontend.num_gpus` > 0) leaves the
CPU its host-side work only: measured as the CPU time of the call with the network answering from a stored output
of its forward (no compute), plus 5 µs per kernel launch; an encoder call is its network alone, so launches only.
Its GPU time is an ESTIMATE: FLOPs (torch FlopCounterMode) at a fraction of the UNet's eager fp32 rate in the
stored GPU table (batch 1 calls at 10 %, batched encoders at 50 %), and never below 5 µs per kernel launch. ONNX
models (insightface) run on the CPU in the cluster image (onnxruntime is the CPU build).

    PYTHONPATH=. python benchmarks/face_frontend.py [--job edit:cluster_gpu] [--faces dlib,fan,fan_tracked,scrfd] \
        [--sizes 1280x720,1920x1080] [--frames 8]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from dva import standins
from dva.crops import crops_to_tensor
from dva.face import build_landmarker, iter_crops, load_face_config, track_faces, track_quads
from dva.models.config import EncoderConfig
from dva.models.encoders import build_encoder
from dva.pipeline.config import EditJobConfig
from dva.runtime.cluster import limit_threads
from dva.runtime.config import load_job_config
from dva.samples import make_sample_clip
from dva.train.config import PreprocessJobConfig
from dva.video import iter_frames

# benchmarks/results/gpu_suite_h200_2026-11-26.txt: dva256 forward, fp32 NHWC eager, batch 8 (TFLOP/s).
GPU_EAGER_TFLOPS = 68.75
GPU_EFFICIENCY = {"batch1": 0.10, "batched": 0.50}  # assumed fractions of that rate: estimates, not measurements
ENCODER_BATCH = 4  # crops per timed encoder call (CPU cost per frame hardly depends on it; 2 shared cores)
LAUNCH_S = 5e-6  # per kernel (≈ aten op), GPU side and CPU side alike
# schema, decodes, crops, and the keys that load its config without weight files (stage A runs no UNet)
JOBS = {"edit": (EditJobConfig, 3, 2, ["input=x", "output=y", "random_weights=true"]),
        "preprocess": (PreprocessJobConfig, 2, 1, ["input=x", "output=y"])}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, repeats: int, warm_up: bool = True) -> float:
    """Median process CPU seconds of `repeats` calls of `fn` (after one untimed warm-up call unless `warm_up` is
    false): the median, since other processes on a shared machine only ever add CPU time (spinning thread pools)."""
    if warm_up:
        fn()
    seconds = []
    for _ in range(repeats):
        start = cpu_seconds()
        fn()
        seconds.append(cpu_seconds() - start)
    return float(np.median(seconds))


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def network_cost(module: torch.nn.Module, inputs: torch.Tensor) -> tuple[float, int]:
    """(GFLOP, kernel launches) of one forward of `module` on `inputs`, counted on the meta device (no compute)."""
    meta = copy.deepcopy(module).eval().to("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as flops, _OpCounter() as ops:
        meta(inputs.to("meta"))
    return flops.get_total_flops() / 1e9, ops.ops


@contextlib.contextmanager
def forward_skipped(module: torch.nn.Module, inputs: torch.Tensor):
    """Within the block `module` answers every call with a copy of its output on `inputs`, computed once: the CPU
    time of a call around it is then the host side, the part that stays on the CPU when the network is on a GPU."""
    with torch.no_grad():
        output = module.eval()(inputs)
    module.forward = lambda *args, **kwargs: tree_map(torch.clone, output)  # callers may edit what they get
    try:
        yield
    finally:
        del module.forward


def gpu_ms(gflop: float, launches: int, kind: str) -> float:
    """ESTIMATED GPU milliseconds of a forward (see the module docstring)."""
    return 1e3 * max(gflop / (GPU_EAGER_TFLOPS * 1e3 * GPU_EFFICIENCY[kind]), launches * LAUNCH_S)


@dataclass
class Part:
    cpu_ms: float  # CPU milliseconds per frame, as configured
    per_frame: float  # how many times per frame the part runs
    gpu_ms: float = 0.0  # ESTIMATED GPU milliseconds per frame (networks on cuda only)
    note: str = ""


def standin_overrides(folder: Path, face_backend: str, model_kinds: dict[str, str]) -> tuple[list[str], list[str]]:
    """key=value overrides pointing every weight key the setup needs at a stand-in file (face keys, model keys)."""
    face = []
    if face_backend == "fan":
        face = [f"fan.weights={standins.write_fan(folder / 'fan.pth')}",
                f"fan.detector_weights={standins.write_s3fd(folder / 's3fd.pth')}"]
    elif face_backend == "insightface":
        face = [f"insightface.detector_weights={standins.write_scrfd_onnx(folder / 'det_10g.onnx')}",
                f"insightface.landmark_weights={standins.write_landmark68_onnx(folder / '1k3d68.onnx')}"]
    writers = {"insightface_arcface": lambda p: standins.write_arcface_onnx(p.with_suffix(".onnx")),
               "fan_landmarks": standins.write_fan}
    model = [f"{key}.weights={writers[kind](folder / key)}" for key, kind in model_kinds.items() if kind in writers]
    return face, model


def torch_networks(landmarker, backend: str, frame: np.ndarray, box: np.ndarray) -> dict[str, tuple]:
    """The torch networks inside a face back end with an input of the size it gives them: {part: (module, input)}."""
    if backend != "fan":
        return {}
    model = landmarker._model
    scale = min(1.0, landmarker.cfg.detect_max_side / max(frame.shape[:2])) if landmarker.cfg.detect_max_side else 1
    h, w = (round(s * scale) for s in frame.shape[:2])
    return {"detect": (model.face_detector.face_detector, torch.zeros(1, 3, h, w)),
            "landmarks": (model.face_alignment_net, torch.zeros(1, 3, 256, 256))}


def onnx_gflop(backend: str, frame: np.ndarray, det_size: int) -> dict[str, float]:
    """GFLOP of the stand-in ONNX networks (their torch originals), for the table only: they run on the CPU."""
    if backend != "insightface":
        return {}
    detector = standins.ScrfdLike()
    landmarks = standins.IResNet(input_hw=192, embedding=3309, layers=(3, 4, 6, 3))
    return {"detect": network_cost(detector, torch.zeros(1, 3, det_size, det_size))[0],
            "landmarks": network_cost(landmarks, torch.zeros(1, 3, 192, 192))[0]}


def bench(clip: str, job: str, job_preset: str, face_preset: str, frames: int, tmp: Path) -> dict[str, Part]:
    schema, decodes, crop_passes, paths = JOBS[job]
    probe_cfg = load_job_config(schema, job_preset, [*paths, f"face_preset={face_preset}"], group=job)
    kinds = {"model.identity_encoder": probe_cfg.model.identity_encoder.kind,
             "model.landmark_encoder": probe_cfg.model.landmark_encoder.kind}
    face_over, model_over = standin_overrides(tmp, probe_cfg.face.backend, kinds)
    cfg = load_job_config(schema, job_preset, [*paths, f"face_preset={face_preset}",
                                               *[f"face.{o}" for o in face_over], *model_over], group=job)
    if cfg.face.device_key and getattr(cfg.face, cfg.face.backend).device == "cuda":
        cfg.face = load_face_config(face_preset, [*face_over, f"{cfg.face.device_key}=cpu"])  # timed on the CPU
        face_on_gpu = True
    else:
        face_on_gpu = False
    limit_threads(cfg.frontend.num_cpus)  # as the stage-A actor: every library at its CPUs, before models are built
    video = list(iter_frames(clip))[:frames]
    reference = track_faces(video, build_landmarker(load_face_config("dlib")), cfg.face.track, clip)
    quads = track_quads(reference.points, cfg.face.align)
    pts = reference.points[0]
    box = np.r_[pts.min(0) - 0.1 * np.ptp(pts, 0), pts.max(0) + 0.1 * np.ptp(pts, 0)].astype(np.float64)
    landmarker = build_landmarker(cfg.face)
    k = cfg.face.track.detect_every
    slow = cfg.face.backend == "fan" and not cfg.face.fan.detect_max_side
    calls = {"detect": lambda: landmarker.detect(video[0]), "landmarks": lambda: landmarker.landmarks(video[0], box)}
    parts = {
        "decode": Part(1e3 * timed(lambda: sum(1 for _ in iter_frames(clip)), 3) / len(reference), decodes),
        "detect": Part(1e3 * timed(calls["detect"], 1 if slow else 3, warm_up=not slow), 1 / k),
        "landmarks": Part(1e3 * timed(calls["landmarks"], 3), 1.0),
        "crop": Part(1e3 * timed(lambda: list(iter_crops(video, quads, cfg.face.align.crop_size)), 3) / len(video),
                     crop_passes),
    }
    if k == 1:  # the detector's own landmark call is already in `detect` for a real detector, not for a stand-in
        parts["landmarks"].note = "in detect (real detector) / extra (stand-in)"
    device_gpu = cfg.frontend.num_gpus > 0
    for part, (module, inputs) in torch_networks(landmarker, cfg.face.backend, video[0], box).items():
        gflop, launches = network_cost(module, inputs)
        parts[part].note = f"{gflop:.1f} GFLOP/call"
        if face_on_gpu:
            with forward_skipped(module, inputs):
                parts[part].cpu_ms = 1e3 * (timed(calls[part], 5) + launches * LAUNCH_S)  # warm-up: numba JIT
            parts[part].gpu_ms = gpu_ms(gflop, launches, "batch1")
    for part, gflop in onnx_gflop(cfg.face.backend, video[0], cfg.face.insightface.det_size).items():
        parts[part].note = f"{gflop:.1f} GFLOP/call (stand-in), ONNX Runtime on CPU"
    crops = np.stack(list(iter_crops(video, quads, cfg.face.align.crop_size)))
    for part, key in (("z_id", "identity_encoder"), ("z_lnd", "landmark_encoder")):
        enc_cfg = getattr(cfg.model, key)
        parts[part] = encoder_part(enc_cfg.kind, enc_cfg.weights, key, crops[:ENCODER_BATCH].tobytes(),
                                   cfg.face.align.crop_size, device_gpu)
    return parts, cfg


@functools.cache
def encoder_part(kind: str, weights: str, key: str, crops: bytes, size: int, on_gpu: bool) -> Part:
    """An encoder's cost per frame (crops are the same size for every frame size and face preset: measured once)."""
    images = crops_to_tensor(np.frombuffer(crops, np.uint8).reshape(-1, size, size, 3))
    encoder = build_encoder(EncoderConfig(kind=kind, dim=512 if key == "identity_encoder" else 102, weights=weights),
                            f"model.{key}", "identity" if key == "identity_encoder" else "landmark")
    if not isinstance(encoder, torch.nn.Module):
        return Part(1e3 * timed(lambda: encoder(images), 3) / len(images), 1.0, note=f"{kind}, ONNX Runtime on CPU")
    gflop, launches = network_cost(encoder, images)
    note = f"{kind}, {gflop / len(images):.1f} GFLOP/frame"
    if on_gpu:  # the call is the network's forward alone: the host only launches its kernels
        gpu = gpu_ms(gflop, launches, "batched")
        return Part(1e3 * launches * LAUNCH_S / len(images), 1.0, gpu / len(images), note)
    with torch.no_grad():
        return Part(1e3 * timed(lambda: encoder(images), 3) / len(images), 1.0, note=note)


def report(name: str, size: str, parts: dict[str, Part], cfg) -> str:
    cpu = sum(p.cpu_ms * p.per_frame for p in parts.values())
    gpu = sum(p.gpu_ms * p.per_frame for p in parts.values())
    per_core = 1e3 / cpu
    per_actor = per_core * cfg.frontend.num_cpus
    lines = [f"{name} {size}: CPU {cpu:.1f} ms/frame -> {per_core:.2f} frames/s per CPU core, {per_actor:.2f} per "
             f"actor ({cfg.frontend.num_cpus:g} CPUs), {per_actor * cfg.frontend.actors:.1f} for "
             f"{cfg.frontend.actors} actors; GPU (ESTIMATE) {gpu:.2f} ms/frame"]
    for part, p in parts.items():
        gpu_text = f"  gpu~{p.gpu_ms * p.per_frame:7.2f} ms" if p.gpu_ms else ""
        lines.append(f"    {part:9s} {p.cpu_ms:9.2f} ms x {p.per_frame:5.3g} = {p.cpu_ms * p.per_frame:8.2f} ms CPU"
                     f"{gpu_text}  {p.note}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default="edit:cluster_gpu", help="JOB:PRESET, JOB in edit, preprocess")
    parser.add_argument("--faces", default="dlib,fan,fan_tracked,scrfd", help="face presets (configs/face/)")
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    job, job_preset = args.job.split(":")
    print("command: PYTHONPATH=. python benchmarks/face_frontend.py " + " ".join(sys.argv[1:]))
    print(f"job {args.job}; process CPU time on {torch.get_num_threads()} threads max; torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="dva-bench-") as tmp:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            clip = make_sample_clip(Path(tmp) / f"clip{size}.mp4", "grace_hopper", frames=args.frames,
                                    size=(width, height), blinks=True)
            for face in args.faces.split(","):
                start = time.perf_counter()
                parts, cfg = bench(clip, job, job_preset, face, args.frames, Path(tmp))
                print(report(face, size, parts, cfg), f"[{time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
