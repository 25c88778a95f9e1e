"""Throughput suite: one script, one table (issue 10). On CUDA it measures the paper's model (dva256); on a CPU it
runs the same code path with the tiny config (CI reads it, nobody should quote its numbers).

    python benchmarks/gpu_suite.py                          # CUDA: dva256, batches 8 32, N = 20 50 100
    python benchmarks/gpu_suite.py --model tiny --steps 5 10 --batches 2 4     # what CI runs on CPU
    python benchmarks/gpu_suite.py --json out/suite.json    # also write every row as JSON

Sections, each a block of the final table:
  ceiling    the device's measured matrix rate (bf16 8192³ on CUDA, fp32 on CPU): the roofline's denominator
  forward    UNet forward TFLOP/s by precision × torch.compile × batch (channels_last on CUDA), peak memory
  sampling   invert (N−1 calls) and generate (N calls) frames/s at each N on the fastest forward config; the
             roofline fraction = achieved / (ceiling ÷ ((2N−1) · GFLOP per forward)); generate-only is what a
             further edit of a video with stored x_T costs
  accuracy   the fast path vs float32 (TF32 off) on a trained model (the shipped demo64) and real face crops
             (`--accuracy-data`, made with `--make-accuracy-data` where the dlib front end runs): max |Δ| and
             relative L2 of x0 after invert+generate and of x_T, beside float32's own reconstruction error
  stage B    the edit job's GPU stage (`dva.pipeline.generate.generate_chunks`: padding to fixed batches, z_face
             per chunk, x_T written to the latent store, crops written) in this process, against the bare loop
  job        the whole Ray edit job on generated clips (CPU stages included) against a bare loop, when Ray and the
             front end are importable here (benchmarks/edit_job.py's measurement); otherwise the reason it was not run

Timing uses random weights (no checkpoint is needed to time a network), with the zero-initialised convolutions
re-drawn so that ε is not trivially zero. `--budget` seconds bounds the run: rows that
would start after it are listed as skipped.
"""

from __future__ import annotations

import argparse
import json
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
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.config import ModelConfig
from dva.models.unet import count_gflops

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


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def matmul_ceiling(device: torch.device) -> tuple[str, float]:
    """Measured dense matrix rate in TFLOP/s: bf16 8192³ on CUDA, fp32 1024³ on CPU (random data, median of 10)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = median_seconds(lambda: a @ b, device, repeats=10, warmup=3)
    return f"{str(dtype).split('.')[-1]} {n}³ matmul", 2 * n**3 / seconds / 1e12


def random_model(cfg: ModelConfig, device: torch.device) -> DiffusionVideoAutoencoder:
    """The model with random weights; zero-initialised convolutions re-drawn so ε carries signal."""
    torch.manual_seed(0)
    model = DiffusionVideoAutoencoder(cfg)
    for module in model.unet.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) and not module.weight.any():
            module.reset_parameters()
    return model.to(device).eval()


@dataclass(frozen=True)
class FastPath:
    """One way of running the UNet: autocast dtype (None = float32), memory format, compiled or not."""

    dtype: Optional[torch.dtype]
    channels_last: bool
    compiled: bool

    @property
    def name(self) -> str:
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return f"{precision} {'NHWC' if self.channels_last else 'NCHW'} {'compiled' if self.compiled else 'eager'}"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @staticmethod
    def parse(text: str) -> "FastPath":
        """`bf16-nhwc-compiled`, `fp32-nchw`, ... (precision-layout[-compiled])."""
        parts = text.lower().split("-")
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if len(parts) not in (2, 3) or parts[0] not in dtypes or parts[1] not in ("nhwc", "nchw") or \
                parts[2:] not in ([], ["compiled"]):
            raise SystemExit(f"--variants: {text!r} is not PRECISION-LAYOUT[-compiled], e.g. bf16-nhwc-compiled")
        return FastPath(dtypes[parts[0]], parts[1] == "nhwc", parts[2:] == ["compiled"])


def default_paths(device: torch.device, compile_: bool) -> list[FastPath]:
    channels_last = device.type == "cuda"  # the fast layout for tensor-core convolutions; CPU kernels prefer NCHW
    paths = [FastPath(None, channels_last, False), FastPath(torch.bfloat16, channels_last, False)]
    if device.type == "cuda":
        paths.append(FastPath(torch.bfloat16, False, False))  # what channels_last buys
    if compile_:  # compiled once, at the largest batch (each batch size is its own graph)
        paths.append(FastPath(torch.bfloat16, channels_last, True))
    return paths


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

    def __init__(self, model: DiffusionVideoAutoencoder, device: torch.device):
        self.model, self.device = model, device
        self._compiled: dict = {}

    def unet(self, path: FastPath, batch: int) -> Callable:
        self.model.unet.to(memory_format=path.memory_format)
        if not path.compiled:
            return self.model.unet
        key = (path.channels_last, batch)
        if key not in self._compiled:
            self._compiled[key] = torch.compile(self.model.unet, dynamic=False)
        return self._compiled[key]

    def inputs(self, batch: int, path: FastPath, seed: int = 0):
        g = torch.Generator(device="cpu").manual_seed(seed)
        s = self.model.image_size
        x = (torch.rand(batch, 3, s, s, generator=g) * 2 - 1).to(self.device)
        cond = torch.randn(batch, self.model.cfg.z_face_dim, generator=g).to(self.device)
        return x.contiguous(memory_format=path.memory_format), cond

    def forward(self, path: FastPath, batch: int) -> Callable[[], torch.Tensor]:
        unet, (x, cond) = self.unet(path, batch), self.inputs(batch, path)
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
    from dva.models.checkpoint import load_model
    from dva.samples import make_sample_clip

    cfg = load_config(ModelConfig, "demo64", group="model", overrides=[f"checkpoint={SHIPPED_CHECKPOINT}"])
    model = load_model(cfg, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = training_set([make_sample_clip(f"{tmp}/a.mp4", "astronaut", frames=8, size=(320, 240))], model)
    cond = model.face_code(data["z_id"].mean(0, keepdim=True), data["z_lnd"])
    torch.save({"model": "demo64", "checkpoint": str(SHIPPED_CHECKPOINT.relative_to(REPO)),
                "images": data["images"], "cond": cond.detach()}, path)
    print(f"wrote {path}: {len(cond)} crops of the astronaut sample for demo64")


def accuracy_rows(table: Table, path: str, device: torch.device, fast: FastPath, steps: int) -> None:
    """x0 and x_T of the fast path vs float32 (TF32 off) on a trained model and real face crops."""
    from dva.models.checkpoint import load_model

    data = torch.load(path)
    cfg = load_config(ModelConfig, data["model"], group="model",
                      overrides=[f"checkpoint={REPO / data['checkpoint']}", "identity_encoder.kind=random",
                                 "landmark_encoder.kind=random"])
    runner = Runner(load_model(cfg, device), device)
    x, cond = data["images"].to(device), data["cond"].to(device)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref_T, ref_0 = runner.round_trip(FastPath(None, False, False), x, cond, steps)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    out_T, out_0 = runner.round_trip(fast, x, cond, steps)
    table.add("accuracy", f"{fast.name} vs fp32, {data['model']} N={steps}",
              x0_max_abs=(out_0 - ref_0).abs().max().item(), x0_relative=_relative(out_0, ref_0),
              xT_relative=_relative(out_T, ref_T), fp32_reconstruction_error=_relative(ref_0, x))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def stage_b_rows(table: Table, model, device, path: FastPath, batch: int, steps: int, bare_fps: float) -> None:
    """generate_chunks on synthetic chunk rows of 4 videos (crops, codes), writing to a temporary output."""
    from dva.pipeline.generate import generate_chunks

    s, chunk = model.image_size, max(1, batch // 2)
    rng = np.random.default_rng(0)
    rows = []
    for v in range(4):
        for c in range(2):
            rows.append({"video_id": f"v{v}", "uri": f"v{v}.mp4", "key": f"v{v}.mp4", "chunk": c, "num_chunks": 2,
                         "num_frames": 2 * chunk, "error": "", "has_x_T": False,
                         "crops": rng.integers(0, 256, (chunk, s, s, 3), dtype=np.uint8),
                         "z_id": rng.standard_normal(model.cfg.identity_encoder.dim).astype(np.float32),
                         "z_lnd": rng.standard_normal((chunk, model.cfg.landmark_encoder.dim)).astype(np.float32),
                         "edits": json.dumps(["reconstruct"]),
                         "z_edits": rng.standard_normal((1, model.cfg.identity_encoder.dim)).astype(np.float32)})
    frames = sum(len(r["crops"]) for r in rows)
    unet = model.unet
    if path.compiled:
        model.unet = torch.compile(unet, dynamic=False)
    try:
        with tempfile.TemporaryDirectory() as out:
            def run():
                results = generate_chunks(model, rows, output=out, steps=steps, batch_frames=batch,
                                          store_latents=True, device=device, autocast_dtype=path.dtype,
                                          memory_format=path.memory_format)
                # stage B contains failures in error rows (out of memory included): never time those as throughput
                failed = [r["error"] for r in results if r["error"]]
                if failed:
                    raise RuntimeError(failed[0])
                return results
            seconds = median_seconds(run, device, repeats=1, warmup=1)
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
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32] if cuda else [2, 4])
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100] if cuda else [5, 10])
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=cuda,
                    help="also time torch.compile'd UNets (default: on CUDA)")
    ap.add_argument("--variants", nargs="+", help="forward variants to time, e.g. bf16-nhwc-compiled fp32-nchw "
                    "(default: fp32, bf16, bf16 NCHW on CUDA, bf16 compiled at the largest batch)")
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
    runner = Runner(model, device)

    paths = [FastPath.parse(v) for v in args.variants] if args.variants else default_paths(device, args.compile)

    # forward
    best: dict[int, tuple[float, FastPath]] = {}
    for batch in args.batches:
        for path in paths:
            if path.compiled and batch != max(args.batches) and not args.variants:
                continue
            if deadline.passed():
                table.add("forward", f"{path.name} b={batch}", skipped="over --budget")
                continue
            started = time.perf_counter()
            try:
                run = runner.forward(path, batch)
                run()  # compiles here for compiled paths
                compile_s = time.perf_counter() - started
                reset_peak(device)
                seconds = median_seconds(run, device, repeats=5)
            except Exception as err:  # a failed variant is a row of the table, not the end of the run
                table.add("forward", f"{path.name} b={batch}", failed=f"{type(err).__name__}: {err}"[:200])
                continue
            tflops = batch * gflops / seconds / 1e3
            extra = {"compile_s": compile_s} if path.compiled else {}
            table.add("forward", f"{path.name} b={batch}", ms=seconds * 1e3, tflops=tflops,
                      roofline=tflops / ceiling, peak_mib=peak_mib(device), **extra)
            if path.dtype is not None and (batch not in best or tflops > best[batch][0]):
                best[batch] = (tflops, path)
    batch = max(best) if best else max(args.batches)
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
        inv = median_seconds(lambda: holder.__setitem__(
            "x_T", ddim_invert(unet, x, cond, steps, autocast_dtype=fast.dtype)), device, repeats=1, warmup=0)
        gen = median_seconds(lambda: ddim_generate(unet, holder["x_T"], cond, steps, autocast_dtype=fast.dtype),
                             device, repeats=1, warmup=0)
        calls = 2 * steps - 1
        fps = batch / (inv + gen)
        bare_fps[steps] = fps
        limit = ceiling * 1e3 / (calls * gflops)
        table.add("sampling", f"{fast.name} b={batch} N={steps}", frames_per_s=fps, roofline_fps=limit,
                  roofline=fps / limit, generate_only_fps=batch / gen, unet_calls_per_frame=calls)

    # accuracy
    if deadline.passed() or not args.accuracy_data:
        table.add("accuracy", f"{fast.name} vs fp32",
                  skipped="over --budget" if args.accuracy_data else "needs --accuracy-data (see --make-accuracy-data)")
    else:
        try:
            accuracy_rows(table, args.accuracy_data, device, fast, args.accuracy_steps)
        except Exception as err:
            table.add("accuracy", f"{fast.name} vs fp32", failed=f"{type(err).__name__}: {err}"[:200])

    # stage B in this process
    n_b = min(args.steps)
    if deadline.passed() or n_b not in bare_fps:
        table.add("stage B", "generate_chunks", skipped="over --budget")
    else:
        try:
            stage_b_rows(table, model, device, fast, batch, n_b, bare_fps[n_b])
        except Exception as err:
            table.add("stage B", "generate_chunks", failed=f"{type(err).__name__}: {err}"[:200])

    # the Ray job
    if args.job:
        if deadline.passed():
            table.add("job", "Ray edit job", skipped="over --budget")
        else:
            job_rows(table, args)

    print(f"\n{card} · {cfg.name} · {gflops:.1f} GFLOP/forward · ceiling {ceiling:.1f} TFLOP/s ({what})")
    print(table.render())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": card, "model": cfg.name, "gflops": gflops, "rows": table.rows}, f, indent=1,
                      default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
