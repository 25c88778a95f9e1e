"""Throughput suite: one script, one table (issues 10, 17). On CUDA it measures the paper's model (dva256); on a CPU
it runs the same code path with the tiny config (CI reads it, nobody should quote its numbers).

    python benchmarks/gpu_suite.py                          # CUDA: dva256, batches 16 32 64, N = 20 50 100
    python benchmarks/gpu_suite.py --model tiny --steps 5 10 --batches 2 4     # what CI runs on CPU
    python benchmarks/gpu_suite.py --json out/suite.json    # also write every row as JSON

The next GPU session (issue 17; fits one 10-minute command, ≈ 6 min of it compiling). First, on the CPU machine,
where the dlib front end runs: `python benchmarks/gpu_suite.py --make-accuracy-data out/faces.pt`, then carry
out/faces.pt to the GPU and run there

    PYTHONPATH=$PWD python benchmarks/gpu_suite.py --batches 16 32 64 --steps 100 --repeats 3 \
        --variants fp32-nhwc bf16-nhwc bf16-nchw bf16-nhwc-fused bf16-nhwc-compiled bf16-nhwc-fused-compiled \
        --accuracy-data out/faces.pt --accuracy-steps 20 --compile-cache-dir out/inductor-cache \
        --budget 420 --json $OUT/gpu_suite.json | tee $OUT/gpu_suite.txt

and, if 6 minutes remain, the compile mode (its autotuning compiles for minutes):

    PYTHONPATH=$PWD python benchmarks/gpu_suite.py --batches 32 --steps 100 --repeats 3 \
        --variants bf16-nhwc-compiled:max-autotune-no-cudagraphs --coordinate-descent-tuning \
        --budget 300 --json $OUT/gpu_suite_autotune.json | tee $OUT/gpu_suite_autotune.txt

Sections, each a block of the final table:
  ceiling    the device's measured matrix rate (bf16 8192³ on CUDA, fp32 on CPU): the roofline's denominator
  forward    UNet forward by precision × layout × norm kernels (eager or the fused Triton chains) × torch.compile
             mode × batch: median ms of --repeats (with min and max), TFLOP/s, roofline fraction, peak memory, and
             ε's relative error against float32 eager (TF32 off) on the same inputs
  sampling   invert (N−1 calls) and generate (N calls) frames/s at each N on the fastest forward config at
             --tuning-batch (median, min, max of --repeats); the roofline fraction = achieved / (ceiling ÷
             ((2N−1) · GFLOP per forward)); generate-only is what a further edit of a video with stored x_T costs
  accuracy   each fast path vs float32 (TF32 off) on a trained model (the shipped demo64) and real face crops
             (`--accuracy-data`, made with `--make-accuracy-data` where the dlib front end runs): relative L2 of ε
             (one call), of x_T and of x0 after invert+generate, max |Δ| of x0, beside float32's own
             reconstruction error
  stage B    the edit job's GPU stage (`dva.pipeline.generate.generate_chunks`: padding to fixed batches, z_face
             per chunk, x_T written to the latent store, crops written) in this process, against the bare loop
  job        the whole Ray edit job on generated clips (CPU stages included) against a bare loop, when Ray and the
             front end are importable here (benchmarks/edit_job.py's measurement); otherwise the reason it was not run

UNets are set up by stage B's own `dva.pipeline.fast_unet.prepare_unet` (fused norms, compile mode, cache dir,
cuDNN autotuning). The fused rows run where Triton does: CUDA, or interpreted on a CPU under TRITON_INTERPRET=1
(slow; the CI test does it to check the path). Timing uses random weights (no checkpoint is needed to time a
network), with the zero-initialised convolutions re-drawn so that ε is not trivially zero. `--budget` seconds
bounds the run: rows that would start after it are listed as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from dva.config import load_config
from dva.diffusion import ddim_generate, ddim_invert
from dva.diffusion.inversion import InversionConfig
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.config import ModelConfig
from dva.models.unet import use_fused_norms
from dva.models.unet import count_gflops
from dva.pipeline.config import COMPILE_MODES, GenerateStageConfig
from dva.pipeline.fast_unet import prepare_unet
from dva.precision import PRECISIONS, Precision, autocast_dtype

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Table:
    rows: list[dict] = field(default_factory=list)

    def add(self, section: str, name: str, **values) -> None:
        row = {"section": section, "name": name, **values}
        self.rows.append(row)
        print(f"  {section:9s} {name:34s} " + "  ".join(f"{k}={_fmt(v)}" for k, v in values.items()), flush=True)

    def render(self) -> str:
        lines = []
        for r in self.rows:
            values = "  ".join(f"{k} {_fmt(v)}" for k, v in r.items() if k not in ("section", "name"))
            lines.append(f"| {r['section']:9s} | {r['name']:34s} | {values}")
        return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() > self.end


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the repeats: the median (what rows report) and the spread."""

    median: float
    low: float
    high: float


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> Timing:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), max(times))


def peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def matmul_ceiling(device: torch.device) -> tuple[str, float]:
    """Measured dense matrix rate in TFLOP/s: bf16 8192³ on CUDA, fp32 1024³ on CPU (random data, median of 10)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = timed(lambda: a @ b, device, repeats=10, warmup=3).median
    return f"{str(dtype).split('.')[-1]} {n}³ matmul", 2 * n**3 / seconds / 1e12


def random_model(cfg: ModelConfig, device: torch.device) -> DiffusionVideoAutoencoder:
    """The model with random weights; zero-initialised convolutions re-drawn so ε carries signal."""
    torch.manual_seed(0)
    model = DiffusionVideoAutoencoder(cfg)
    for module in model.unet.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) and not module.weight.any():
            module.reset_parameters()
    return model.to(device).eval()


# The precisions a path can name (not `auto`: each path says what it runs) and their autocast dtypes on the GPU.
PATH_DTYPES = {p: autocast_dtype(p, torch.device("cuda")) for p in PRECISIONS if p != Precision.AUTO}


@dataclass(frozen=True)
class FastPath:
    """One way of running the UNet: autocast dtype (None = float32), memory format, fused GroupNorm kernels
    (`generate.norm_kernels: triton`), compiled or not and with which `generate.compile_mode`."""

    dtype: Optional[torch.dtype]
    channels_last: bool
    compiled: bool
    fused: bool = False
    mode: str = "default"

    @property
    def name(self) -> str:
        precision = next(name for name, dtype in PATH_DTYPES.items() if dtype == self.dtype)
        how = "compiled" + ("" if self.mode == "default" else f" {self.mode}") if self.compiled else "eager"
        return f"{precision} {'NHWC' if self.channels_last else 'NCHW'} {'fused ' if self.fused else ''}{how}"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def settings(self) -> GenerateStageConfig:
        """Stage B's settings for this path: the suite's UNets are built by the stage's own `prepare_unet`."""
        return GenerateStageConfig(compile=self.compiled, compile_mode=self.mode,
                                   norm_kernels="triton" if self.fused else "eager")

    @staticmethod
    def parse(text: str) -> "FastPath":
        """`bf16-nhwc-compiled`, `fp32-nchw`, `bf16-nhwc-fused-compiled:max-autotune-no-cudagraphs`, ...
        (PRECISION-LAYOUT[-fused][-compiled[:MODE]])."""
        head, _, mode = text.lower().partition(":")
        parts = head.split("-")
        fused = parts[2:3] == ["fused"]
        rest = parts[2 + fused:]
        if len(parts) < 2 or parts[0] not in PATH_DTYPES or parts[1] not in ("nhwc", "nchw") or \
                rest not in ([], ["compiled"]) or (mode and not rest) or (mode and mode not in COMPILE_MODES):
            raise SystemExit(f"--variants: {text!r} is not PRECISION-LAYOUT[-fused][-compiled[:MODE]] (MODE one of "
                             f"{', '.join(COMPILE_MODES)}), e.g. bf16-nhwc-fused-compiled")
        return FastPath(PATH_DTYPES[parts[0]], parts[1] == "nhwc", rest == ["compiled"], fused, mode or "default")


def fused_norms_run_on(device: torch.device) -> bool:
    """Whether the Triton kernels can run here: on CUDA, or interpreted on the CPU (TRITON_INTERPRET=1)."""
    import importlib.util

    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return importlib.util.find_spec("triton") is not None and (device.type == "cuda" or interpreted)


def default_paths(device: torch.device, compile_: bool) -> list[FastPath]:
    channels_last = device.type == "cuda"  # the fast layout for tensor-core convolutions; CPU kernels prefer NCHW
    paths = [FastPath(None, channels_last, False), FastPath(torch.bfloat16, channels_last, False)]
    if device.type == "cuda":
        paths.append(FastPath(torch.bfloat16, False, False))  # what channels_last buys
    fused = fused_norms_run_on(device)
    if fused:
        paths.append(FastPath(torch.bfloat16, channels_last, False, fused=True))
    if compile_:
        paths.append(FastPath(torch.bfloat16, channels_last, True))
        if fused:
            paths.append(FastPath(torch.bfloat16, channels_last, True, fused=True))
        paths.append(FastPath(torch.bfloat16, channels_last, True, mode="max-autotune-no-cudagraphs"))
    return paths


def forward_rows_order(paths: list[FastPath], batches: list[int], tuning_batch: int) -> list[tuple[FastPath, int]]:
    """(path, batch) of each forward row. Eager paths and plain compiled run at every batch; each further compiled
    variant (fused, another mode: a compile of minutes per batch) only at the tuning batch, after all the others,
    so that --budget cuts those first."""
    def everywhere(path: FastPath) -> bool:
        return not path.compiled or (not path.fused and path.mode == "default")

    rows = [(p, b) for b in batches for p in paths if everywhere(p)]
    return rows + [(p, tuning_batch) for p in paths if not everywhere(p)]


def profile_rows(table: Table, run: Callable, device: torch.device, top: int) -> None:
    """The `top` kernels of one forward by device time, as rows (what to fuse or retune next)."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        run()
        sync(device)
    attr = "device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1
    for e in sorted(events, key=lambda e: -getattr(e, attr))[:top]:
        table.add("profile", e.key[:34], share=getattr(e, attr) / total, ms=getattr(e, attr) / 1e3, calls=e.count)


class Runner:
    """UNet variants over one set of weights; compiled variants are built (and compiled) once per batch size."""

    def __init__(self, model: DiffusionVideoAutoencoder, device: torch.device, compile_cache_dir=None,
                 coordinate_descent_tuning: bool = False):
        self.model, self.device, self.compile_cache_dir = model, device, compile_cache_dir
        self.coordinate_descent_tuning = coordinate_descent_tuning
        self._compiled: dict = {}

    def unet(self, path: FastPath, batch: int) -> Callable:
        """The UNet for `path` (use it before asking for another path: the layout and norms are switched here)."""
        self.model.unet.to(memory_format=path.memory_format)
        settings = path.settings
        settings.compile_cache_dir = self.compile_cache_dir
        settings.coordinate_descent_tuning = self.coordinate_descent_tuning
        if not path.compiled:
            return prepare_unet(self.model.unet, settings, self.device)
        key = (path, batch)
        if key not in self._compiled:
            self._compiled[key] = prepare_unet(self.model.unet, settings, self.device)
        use_fused_norms(self.model.unet, self.device, enabled=path.fused)
        return self._compiled[key]

    def inputs(self, batch: int, path: FastPath, seed: int = 0):
        g = torch.Generator(device="cpu").manual_seed(seed)
        s = self.model.image_size
        x = (torch.rand(batch, 3, s, s, generator=g) * 2 - 1).to(self.device)
        cond = torch.randn(batch, self.model.cfg.z_face_dim, generator=g).to(self.device)
        return x.contiguous(memory_format=path.memory_format), cond

    def forward(self, path: FastPath, batch: int, x: Optional[torch.Tensor] = None,
                cond: Optional[torch.Tensor] = None) -> Callable[[], torch.Tensor]:
        """One UNet call at t=500 on (x, cond), by default the batch's random inputs."""
        unet = self.unet(path, batch)
        if x is None:
            x, cond = self.inputs(batch, path)
        x = x.contiguous(memory_format=path.memory_format)
        t = torch.full((batch,), 500, dtype=torch.long, device=self.device)

        def run():
            with torch.no_grad(), torch.autocast(self.device.type, dtype=path.dtype or torch.float32,
                                                 enabled=path.dtype is not None):
                return unet(x, t, cond)
        return run

    def round_trip(self, path: FastPath, x: torch.Tensor, cond: torch.Tensor, steps: int):
        unet, x = self.unet(path, len(x)), x.contiguous(memory_format=path.memory_format)
        x_T = ddim_invert(unet, x, cond, steps, autocast_dtype=path.dtype)
        return x_T, ddim_generate(unet, x_T.contiguous(memory_format=path.memory_format), cond, steps,
                                  autocast_dtype=path.dtype)


def make_accuracy_data(path: str) -> None:
    """Trained-model inputs for the accuracy rows, made where the dlib front end runs: the shipped demo64 checkpoint's
    name, 8 aligned crops of the astronaut sample and their z_face. Random weights make DDIM inversion chaotic (the
    round trip of an untrained ε amplifies any rounding), so the x0 comparison needs a trained model."""
    from dva.demo import SHIPPED_CHECKPOINT, training_set
    from dva.runtime.weights import load_model
    from dva.samples import make_sample_clip

    cfg = load_config(ModelConfig, "demo64", group="model", overrides=[f"checkpoint={SHIPPED_CHECKPOINT}"])
    model = load_model(cfg, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = training_set([make_sample_clip(f"{tmp}/a.mp4", "astronaut", frames=8, size=(320, 240))], model)
    cond = model.face_code(data["z_id"].mean(0, keepdim=True), data["z_lnd"])
    torch.save({"model": "demo64", "checkpoint": str(SHIPPED_CHECKPOINT.relative_to(REPO)),
                "images": data["images"], "cond": cond.detach()}, path)
    print(f"wrote {path}: {len(cond)} crops of the astronaut sample for demo64")


REFERENCE = FastPath(None, False, False)  # float32, NCHW, eager, TF32 off: what every error is measured against


@contextlib.contextmanager
def tf32_off():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def accuracy_rows(table: Table, data_path: str, device: torch.device, paths: list[FastPath], steps: int,
                  deadline: Deadline, **runner_options) -> None:
    """Each fast path vs float32 on a trained model and real face crops: ε of one call (t=500) and x_T, x0 after
    invert+generate."""
    from dva.runtime.weights import load_model

    data = torch.load(data_path)
    cfg = load_config(ModelConfig, data["model"], group="model",
                      overrides=[f"checkpoint={REPO / data['checkpoint']}", "identity_encoder.kind=random",
                                 "landmark_encoder.kind=random"])
    runner = Runner(load_model(cfg, device), device, **runner_options)
    x, cond = data["images"].to(device), data["cond"].to(device)
    with tf32_off():
        ref_eps = runner.forward(REFERENCE, len(x), x, cond)()
        ref_T, ref_0 = runner.round_trip(REFERENCE, x, cond, steps)
    for path in dict.fromkeys(p for p in paths if p != REFERENCE):
        name = f"{path.name} vs fp32, {data['model']} N={steps}"
        if deadline.passed():
            table.add("accuracy", name, skipped="over --budget")
            continue
        if path.fused and device.type != "cuda":  # ≈ 25 s of CPU per call; the forward row has its ε error
            table.add("accuracy", name, skipped="Triton interpreted on the CPU: tests/unit/test_fast_path.py "
                                                "holds this path to the bounds")
            continue
        try:
            eps = runner.forward(path, len(x), x, cond)()
            out_T, out_0 = runner.round_trip(path, x, cond, steps)
        except Exception as err:
            table.add("accuracy", name, failed=f"{type(err).__name__}: {err}"[:200])
            continue
        table.add("accuracy", name, eps_relative=_relative(eps, ref_eps),
                  x0_max_abs=(out_0 - ref_0).abs().max().item(), x0_relative=_relative(out_0, ref_0),
                  xT_relative=_relative(out_T, ref_T), fp32_reconstruction_error=_relative(ref_0, x))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def stage_b_rows(table: Table, runner: Runner, path: FastPath, batch: int, steps: int, bare_fps: float) -> None:
    """generate_chunks on synthetic chunk rows of 4 videos (crops, codes), writing to a temporary output."""
    from dva.pipeline.config import GenerateStageConfig
    from dva.pipeline.generate import generate_chunks
    from dva.runtime.background import BackgroundWriter

    model, device = runner.model, runner.device
    writer = BackgroundWriter(GenerateStageConfig().write_queue)  # as the stage's actors write

    s, chunk = model.image_size, max(1, batch // 2)
    rng = np.random.default_rng(0)
    rows = []
    for v in range(4):
        for c in range(2):
            rows.append({"video_id": f"v{v}", "uri": f"v{v}.mp4", "key": f"v{v}.mp4", "chunk": c, "num_chunks": 2, "face": 0,
                         "pair_chunks": json.dumps({"reconstruct": 2}),
                         "num_frames": 2 * chunk, "error": "", "has_x_T": False,
                         "crops": rng.integers(0, 256, (chunk, s, s, 3), dtype=np.uint8),
                         "z_id": rng.standard_normal(model.cfg.identity_encoder.dim).astype(np.float32),
                         "z_lnd": rng.standard_normal((chunk, model.cfg.landmark_encoder.dim)).astype(np.float32),
                         "edits": json.dumps(["reconstruct"]),
                         "z_edits": rng.standard_normal((1, model.cfg.identity_encoder.dim)).astype(np.float32)})
    frames = sum(len(r["crops"]) for r in rows)
    unet = model.unet
    model.unet = runner.unet(path, batch)
    try:
        with tempfile.TemporaryDirectory() as out:
            def run():
                results = generate_chunks(model, rows, output=out, steps=steps, batch_frames=batch,
                                          store_latents=True, inversion=InversionConfig(),
                                          device=device, autocast_dtype=path.dtype, writer=writer,
                                          memory_format=path.memory_format)
                # stage B contains failures in error rows (out of memory included): never time those as throughput
                failed = [r["error"] for r in results if r["error"]]
                if failed:
                    raise RuntimeError(failed[0])
                return results
            seconds = timed(run, device, repeats=1, warmup=1).median
    finally:
        model.unet = unet
    fps = frames / seconds
    table.add("stage B", f"generate_chunks N={steps} b={batch}", frames=frames, frames_per_s=fps,
              overhead_vs_bare=bare_fps / fps - 1)


def job_rows(table: Table, args) -> None:
    import importlib.util

    missing = [m for m in ("ray", "dlib") if importlib.util.find_spec(m) is None]
    if missing:
        table.add("job", "Ray edit job", skipped=f"{', '.join(missing)} not installed here; run "
                                                 f"benchmarks/edit_job.py where Ray and the front end are")
        return
    import edit_job

    result = edit_job.measure(args.job_config, videos=args.job_videos, frames=args.job_frames,
                              size=(args.job_size, args.job_size), overrides=args.job_overrides)
    table.add("job", f"Ray edit job ({args.job_config})", frames=result["frames"],
              frames_per_s=result["job_fps"], bare_loop_fps=result["plain_fps"], overhead=result["overhead"],
              second_edit_calls_per_frame=result["second_calls_per_frame"], ray_start_s=result["ray_start_s"])


def main(argv: Optional[list[str]] = None) -> int:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dva256" if cuda else "tiny")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64] if cuda else [2, 4])
    ap.add_argument("--tuning-batch", type=int, help="the batch of the sampling rows and of the compiled variants "
                    "beyond plain bf16 compiled (default: 32 on CUDA, the largest of --batches on CPU)")
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100] if cuda else [5, 10])
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per row (≥ 3): median, min, max")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=cuda,
                    help="also time torch.compile'd UNets (default: on CUDA)")
    ap.add_argument("--compile-cache-dir", help="generate.compile_cache_dir for the compiled rows (default: torch's)")
    ap.add_argument("--coordinate-descent-tuning", action="store_true",
                    help="generate.coordinate_descent_tuning for the compiled rows")
    ap.add_argument("--variants", nargs="+", help="forward variants to time, e.g. fp32-nchw "
                    "bf16-nhwc-fused-compiled:max-autotune-no-cudagraphs; eager and plain compiled ones at every "
                    "batch, other compiled ones at --tuning-batch (default: fp32, bf16, bf16 NCHW on CUDA, bf16 fused "
                    "where Triton runs; compiled: bf16, bf16 fused, bf16 max-autotune-no-cudagraphs)")
    ap.add_argument("--profile", type=int, default=0, metavar="K", help="list the K costliest kernels of one forward "
                    "of the fastest variant")
    ap.add_argument("--accuracy-steps", type=int, default=20)
    ap.add_argument("--budget", type=float, default=330.0, help="seconds; later rows are skipped")
    ap.add_argument("--job", action=argparse.BooleanOptionalAction, default=not cuda,
                    help="run the Ray edit job too (needs Ray and the dlib front end; default: on CPU)")
    ap.add_argument("--job-config", default="local_tiny")
    ap.add_argument("--job-videos", type=int, default=2)
    ap.add_argument("--job-frames", type=int, default=8)
    ap.add_argument("--job-size", type=int, default=256, help="generated clips are SIZE×SIZE")
    ap.add_argument("--job-overrides", nargs="*", default=[])
    ap.add_argument("--accuracy-data", help="file written by --make-accuracy-data (trained model + face crops)")
    ap.add_argument("--make-accuracy-data", metavar="PATH", help="write the accuracy inputs here and exit")
    ap.add_argument("--json", help="write the rows here as JSON")
    args = ap.parse_args(argv)
    if args.repeats < 3:
        ap.error("--repeats: at least 3 (each row reports the median with min and max)")
    if args.tuning_batch is None:
        args.tuning_batch = 32 if args.device.startswith("cuda") and 32 in args.batches else max(args.batches)
    if args.make_accuracy_data:
        make_accuracy_data(args.make_accuracy_data)
        return 0

    device = torch.device(args.device)
    deadline = Deadline(args.budget)
    torch.backends.cudnn.benchmark = True
    cfg = load_config(ModelConfig, args.model, group="model",
                      overrides=["identity_encoder.kind=random", "landmark_encoder.kind=random",
                                 "identity_encoder.weights=null", "landmark_encoder.weights=null"])
    params, gflops = count_gflops(cfg)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{card}; torch {torch.__version__}; model {cfg.name}: {params / 1e6:.2f} M parameters, "
          f"{gflops:.1f} GFLOP per {cfg.unet.image_size}² forward", flush=True)
    table = Table()

    what, ceiling = matmul_ceiling(device)
    table.add("ceiling", what, tflops=ceiling)
    model = random_model(cfg, device)
    runner = Runner(model, device, args.compile_cache_dir, args.coordinate_descent_tuning)

    paths = [FastPath.parse(v) for v in args.variants] if args.variants else default_paths(device, args.compile)

    # forward
    best: dict[int, tuple[float, FastPath]] = {}
    references: dict[int, torch.Tensor] = {}  # ε of float32 eager (TF32 off) per batch
    for path, batch in forward_rows_order(paths, args.batches, args.tuning_batch):
        if deadline.passed():
            table.add("forward", f"{path.name} b={batch}", skipped="over --budget")
            continue
        try:
            if batch not in references:
                with tf32_off():
                    references[batch] = runner.forward(REFERENCE, batch)()
            started = time.perf_counter()
            run = runner.forward(path, batch)
            eps = run()  # compiles here for compiled paths
            compile_s = time.perf_counter() - started
            reset_peak(device)
            timing = timed(run, device, repeats=args.repeats)
        except Exception as err:  # a failed variant is a row of the table, not the end of the run
            table.add("forward", f"{path.name} b={batch}", failed=f"{type(err).__name__}: {err}"[:200])
            continue
        tflops = batch * gflops / timing.median / 1e3
        extra = {"compile_s": compile_s} if path.compiled else {}
        table.add("forward", f"{path.name} b={batch}", ms=timing.median * 1e3, ms_min=timing.low * 1e3,
                  ms_max=timing.high * 1e3, tflops=tflops, roofline=tflops / ceiling, peak_mib=peak_mib(device),
                  eps_relative=_relative(eps, references[batch]), **extra)
        if path.dtype is not None and (batch not in best or tflops > best[batch][0]):
            best[batch] = (tflops, path)
    batch = args.tuning_batch if args.tuning_batch in best else max(best) if best else max(args.batches)
    fast = best[batch][1] if best else paths[-1]
    per_frame = [r for r in table.rows if r["section"] == "forward" and r["name"] == f"{fast.name} b={batch}"]
    if device.type == "cuda" and per_frame:
        free, total = torch.cuda.mem_get_info(device)
        mib = per_frame[0]["peak_mib"] / batch
        table.add("forward", "batch rule", peak_mib_per_frame=mib,
                  suggested_batch_frames=int(0.8 * total / 2**20 / mib) // 8 * 8)

    if args.profile and best:
        profile_rows(table, runner.forward(fast, batch), device, args.profile)

    # sampling
    bare_fps = {}
    for steps in args.steps:
        if deadline.passed():
            table.add("sampling", f"{fast.name} b={batch} N={steps}", skipped="over --budget")
            continue
        unet, (x, cond) = runner.unet(fast, batch), runner.inputs(batch, fast)
        holder = {}
        inv = timed(lambda: holder.__setitem__(
            "x_T", ddim_invert(unet, x, cond, steps, autocast_dtype=fast.dtype)), device, args.repeats, warmup=0)
        gen = timed(lambda: ddim_generate(unet, holder["x_T"], cond, steps, autocast_dtype=fast.dtype),
                    device, args.repeats, warmup=0)
        calls = 2 * steps - 1
        fps = batch / (inv.median + gen.median)
        bare_fps[steps] = fps
        limit = ceiling * 1e3 / (calls * gflops)
        table.add("sampling", f"{fast.name} b={batch} N={steps}", frames_per_s=fps,
                  fps_min=batch / (inv.high + gen.high), fps_max=batch / (inv.low + gen.low), roofline_fps=limit,
                  roofline=fps / limit, generate_only_fps=batch / gen.median, unet_calls_per_frame=calls)

    # accuracy
    if deadline.passed() or not args.accuracy_data:
        table.add("accuracy", "fast paths vs fp32",
                  skipped="over --budget" if args.accuracy_data else "needs --accuracy-data (see --make-accuracy-data)")
    else:
        try:
            accuracy_rows(table, args.accuracy_data, device, paths, args.accuracy_steps, deadline,
                          compile_cache_dir=args.compile_cache_dir,
                          coordinate_descent_tuning=args.coordinate_descent_tuning)
        except Exception as err:
            table.add("accuracy", "fast paths vs fp32", failed=f"{type(err).__name__}: {err}"[:200])

    # stage B in this process
    n_b = min(args.steps)
    if deadline.passed() or n_b not in bare_fps:
        table.add("stage B", "generate_chunks", skipped="over --budget")
    else:
        try:
            stage_b_rows(table, runner, fast, batch, n_b, bare_fps[n_b])
        except Exception as err:
            table.add("stage B", "generate_chunks", failed=f"{type(err).__name__}: {err}"[:200])

    # the Ray job
    if args.job:
        if deadline.passed():
            table.add("job", "Ray edit job", skipped="over --budget")
        else:
            job_rows(table, args)

    print(f"\n{card} · torch {torch.__version__} · {cfg.name} · {gflops:.1f} GFLOP/forward · ceiling {ceiling:.1f} "
          f"TFLOP/s ({what})")
    print(table.render())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": card, "torch": torch.__version__, "model": cfg.name, "gflops": gflops,
                       "rows": table.rows}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
