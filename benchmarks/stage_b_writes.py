"""Stage B with outputs on S3: its writes in the UNet's thread (`generate.write_queue=0`) vs the background writer.

Runs `dva.pipeline.generate.generate_chunks` — the edit job's stage B as its actors call it — on synthetic chunk rows
of several videos with a few edits each, writing x_T and the edited crops to a local S3 server (moto, over HTTP, in a
process of its own as a remote endpoint would be), once per queue size, and prints frames/s (median of the repeats, with min and max), the seconds
the writes themselves took per call (in whichever thread), and the process's peak RSS. On a GPU the UNet part shrinks and the share the background writer hides grows.

    python benchmarks/stage_b_writes.py --model tiny --queues 0,8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dva.config import load_config  # noqa: E402
from dva.diffusion.inversion import InversionConfig  # noqa: E402
from dva.models.config import ModelConfig  # noqa: E402
import dva.pipeline.generate as stage_b  # noqa: E402
from dva.runtime.background import BackgroundWriter  # noqa: E402
from dva.runtime.weights import load_model  # noqa: E402
from tests.s3 import MotoS3  # noqa: E402  (the tests' real S3 endpoint on loopback)


def chunk_rows(model, videos: int, chunks: int, frames: int, edits: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    s, zid, zlnd = model.image_size, model.cfg.identity_encoder.dim, model.cfg.landmark_encoder.dim
    names = json.dumps(["reconstruct"] + [f"identity:e{k}.jpg" for k in range(1, edits)])
    return [{"video_id": f"v{v}", "uri": f"v{v}.mp4", "key": f"v{v}.mp4", "chunk": c, "num_chunks": chunks,
             "face": 0, "pair_chunks": json.dumps(dict.fromkeys(json.loads(names), chunks)),
             "num_frames": chunks * frames, "error": "", "has_x_T": False, "edits": names,
             "crops": rng.integers(0, 256, (frames, s, s, 3), dtype=np.uint8),
             "z_id": rng.standard_normal(zid).astype(np.float32),
             "z_lnd": rng.standard_normal((frames, zlnd)).astype(np.float32),
             "z_edits": rng.standard_normal((edits, zid)).astype(np.float32)}
            for v in range(videos) for c in range(chunks)]


class TimedWrites:
    """Stage B's write function, timed: `seconds` spent writing, in whichever thread the writes ran."""

    def __init__(self, write):
        self.write, self.seconds = write, 0.0

    def __call__(self, uri: str, data: bytes) -> None:
        start = time.perf_counter()
        self.write(uri, data)
        self.seconds += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="model preset in configs/model/")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps N")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=2, help="chunks per video in one stage-B call")
    parser.add_argument("--frames", type=int, default=8, help="frames per chunk")
    parser.add_argument("--edits", type=int, default=3, help="edits per video (the first is reconstruct)")
    parser.add_argument("--batch-frames", type=int, default=16)
    parser.add_argument("--queues", default="0,8", help="generate.write_queue values to compare")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); as stage B's "
                        "`generate.num_cpus` sets them, so the writer may or may not have a core of its own")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = load_model(load_config(ModelConfig, args.model, group="model")).eval()
    rows = chunk_rows(model, args.videos, args.chunks, args.frames, args.edits)
    frames = sum(len(r["crops"]) for r in rows)
    timed_writes = TimedWrites(stage_b.write_bytes_atomic)
    stage_b.write_bytes_atomic = timed_writes  # x_T goes through LatentStore: time it there too
    import dva.latents as latents
    latents.write_bytes_atomic = timed_writes
    s3 = MotoS3(own_process=True).start()
    try:
        bucket = s3.make_bucket()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model} "
              f"({model.image_size}px), N={args.steps}, {len(rows)} chunks × {args.frames} frames × {args.edits} "
              f"edits per call, outputs on a local S3 server (moto, own process)")
        print(f"{'write_queue':>11} {'frames':>6} {'s/call med':>10} {'min':>7} {'max':>7} {'frames/s':>9} "
              f"{'writes s/call':>13} {'peak RSS MiB':>12}")
        for queue in (int(q) for q in args.queues.split(",")):
            writer = BackgroundWriter(queue)
            seconds, written = [], []
            for repeat in range(args.repeats + 1):  # the first call warms up (and creates the bucket's prefixes)
                output = f"{bucket}/run-{uuid.uuid4().hex[:8]}"
                start, timed_writes.seconds = time.perf_counter(), 0.0
                results = stage_b.generate_chunks(model, rows, output=output, steps=args.steps,
                                          batch_frames=args.batch_frames, store_latents=True,
                                          inversion=InversionConfig(), device=torch.device("cpu"),
                                          autocast_dtype=None, writer=writer)
                if any(r["error"] for r in results):
                    raise SystemExit(f"stage B failed: {next(r['error'] for r in results if r['error'])}")
                if repeat:
                    seconds.append(time.perf_counter() - start)
                    written.append(timed_writes.seconds)
            writer.close()
            med = statistics.median(seconds)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{queue:>11} {frames:>6} {med:>10.3f} {min(seconds):>7.3f} {max(seconds):>7.3f} "
                  f"{frames / med:>9.2f} {statistics.median(written):>13.3f} {peak:>12.0f}")
    finally:
        s3.stop()


if __name__ == "__main__":
    main()
