"""End-to-end throughput of the Ray edit job against a plain batched loop doing the same UNet calls.

    python benchmarks/edit_job.py                          # tiny model, CPU, local Ray
    python benchmarks/edit_job.py --config cluster_gpu --videos 16 --frames 64 model.checkpoint=... \
        ray_address=127.0.0.1:6379   # on a GPU; start Ray with a GPU pod's places first (README "Running on a cluster")
    python benchmarks/edit_job.py --faces 2                # two people in every clip: compare face-frames/s

Prints frames/s end to end, UNet calls per frame (2N−1 for the first edit, N for each further one and for a rerun
with stored latents), the share of wall time spent outside the UNet (the job's time over the plain loop's), and
the peak resident memory of the driver and of the largest Ray worker. The job counts face frames (a frame with two
faces counts twice: each face is inverted and decoded on its own). With `--faces 2` every clip shows two people for
its whole length and each is edited: face-frames/s is the figure to hold against the one-face run's (issue 19:
within 10 %).

Timing does not depend on the weights: without a `model.checkpoint=` override the job runs with
`random_weights=true` (its outputs equal its inputs, and its manifest and console say so).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import torch

from dva.diffusion import ddim_generate, ddim_invert
from dva.runtime.weights import load_model
from dva.pipeline.config import EditJobConfig
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import run_edit_job
from dva.precision import autocast_dtype
from dva.runtime.cluster import init_ray
from dva.samples import make_sample_clip


class WorkerMemory:
    """Samples the resident memory of every Ray worker process (Linux /proc) while the job runs; keeps the maximum."""

    def __init__(self, interval: float = 0.2):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                        continue
                    status = (proc / "status").read_text()
                except OSError:  # the process ended meanwhile
                    continue
                rss_kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
                self.peak = max(self.peak, rss_kib * 1024)
            time.sleep(interval)

    def __enter__(self) -> "WorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def plain_loop_seconds(cfg: EditJobConfig, frames: int, edits: int) -> float:
    """The same UNet work as the job (one inversion, `edits` generations per frame) as a bare batched loop."""
    device = torch.device("cuda" if cfg.generate.num_gpus > 0 and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, int(cfg.generate.num_cpus)))
    model = load_model(cfg.model, device)
    dtype = autocast_dtype(cfg.precision, device)
    s, b = cfg.model.unet.image_size, cfg.generate.batch_frames
    x = torch.rand(b, 3, s, s, device=device) * 2 - 1
    cond = torch.randn(b, cfg.model.z_face_dim, device=device)
    start = time.perf_counter()
    for _ in range(-(-frames // b)):
        x_T = ddim_invert(model, x, cond, cfg.steps, autocast_dtype=dtype)
        for _ in range(edits):
            ddim_generate(model, x_T, cond, cfg.steps, autocast_dtype=dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(config: str, videos: int, frames: int, size: tuple[int, int], overrides=(), faces: int = 1) -> dict:
    """Run the job on generated clips, then the plain loop, then a further edit reusing the stored latents.

    `faces` 1: each clip shows one person (astronaut and Grace Hopper in turn); 2: both, for the whole clip."""
    if faces not in (1, 2):
        raise ValueError(f"faces must be 1 or 2, got {faces}")
    width, height = size
    work = Path(tempfile.mkdtemp(prefix="dva-bench-"))
    for i in range(videos):
        people = ("astronaut", "grace_hopper") if faces == 2 else ("astronaut", "grace_hopper")[i % 2]
        make_sample_clip(work / "in" / f"clip{i}.mp4", people, frames=frames, size=(width, height), seed=i,
                         audio=True)
    untrained = [] if any(o.startswith("model.checkpoint=") for o in overrides) else ["random_weights=true"]
    overrides = [f"input={work / 'in'}", f"output={work / 'out'}", "progress=false", *untrained, *overrides]
    cfg = load_job_config(EditJobConfig, config, overrides)
    edits = len(cfg.edits)
    # Ray itself starts outside the timed run: on a cluster it is already up when a job is submitted.
    started = time.perf_counter()
    init_ray(cfg.ray_address, cfg.progress)
    ray_start = time.perf_counter() - started
    with WorkerMemory() as memory:
        first = run_edit_job(cfg)
    plain = plain_loop_seconds(cfg, first.frames, edits)  # one UNet sample per face frame
    # A further edit on the same output reuses the stored x_T: only generation runs.
    more = load_job_config(EditJobConfig, config, [*overrides, f"edits=[identity:{work / 'in' / 'clip1.mp4'}]"])
    second = run_edit_job(more)
    return {"cfg": cfg, "work": work, "frames": first.frames, "job_s": first.seconds, "ray_start_s": ray_start,
            "job_fps": videos * frames / first.seconds, "calls_per_frame": first.unet_calls / first.frames,
            "faces": faces, "job_face_fps": first.frames / first.seconds,
            "second_face_fps": second.frames / second.seconds,
            "plain_s": plain, "plain_fps": first.frames / plain, "outside_unet": 1 - plain / first.seconds,
            "overhead": first.seconds / plain - 1,
            "second_fps": videos * frames / second.seconds,
            "second_calls_per_frame": second.unet_calls / max(second.frames, 1),
            "driver_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_mib": memory.peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="local_tiny")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16, help="frames per generated clip")
    ap.add_argument("--size", default="320x240", help="clip size WxH")
    ap.add_argument("--faces", type=int, choices=(1, 2), default=1,
                    help="people per clip, each edited (2: astronaut and Grace Hopper in every frame)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    r = measure(args.config, args.videos, args.frames, (width, height), args.overrides, args.faces)
    cfg = r["cfg"]
    print(f"config {args.config}: {args.videos} videos × {args.frames} frames at {width}x{height}, N={cfg.steps}, "
          f"{len(cfg.edits)} edit(s), batch {cfg.generate.batch_frames}, device "
          f"{'cuda' if cfg.generate.num_gpus > 0 and torch.cuda.is_available() else 'cpu'}")
    print(f"Ray start-up (not timed below; a cluster is already up): {r['ray_start_s']:.1f} s")
    print(f"first run:  {r['job_fps']:.2f} frames/s end to end ({r['job_s']:.1f} s, actor set-up included), "
          f"{r['calls_per_frame']:.1f} UNet calls per face frame")
    print(f"plain loop: {r['plain_fps']:.2f} face frames/s for the same UNet calls ({r['plain_s']:.1f} s); pipeline "
          f"overhead {r['overhead']:.0%} over the loop; time outside the UNet {r['outside_unet']:.0%} of the job's")
    print(f"another edit with stored latents: {r['second_fps']:.2f} frames/s, "
          f"{r['second_calls_per_frame']:.1f} UNet calls per face frame "
          f"(= N/(2N−1) = {cfg.steps / (2 * cfg.steps - 1):.2f} of a first edit's)")
    print(f"per face ({args.faces} face(s) in every frame): first run {r['job_face_fps']:.2f} face-frames/s, "
          f"another edit {r['second_face_fps']:.2f} face-frames/s (compare with a --faces 1 run's)")
    print(f"peak memory: driver {r['driver_mib']:.0f} MiB, largest Ray worker {r['worker_mib']:.0f} MiB")
    print(f"outputs: {r['work'] / 'out'}")


if __name__ == "__main__":
    main()
