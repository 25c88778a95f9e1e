"""`dva train`: the training step of `dva.train.loop` on Ray Train (DDP over workers), data from Ray Data.

Each worker streams its share of the preprocessed shards (`dva.train.shards`), draws k videos x m frames per step
(`dva.train.sampler`), and runs `train_step` on the DDP-wrapped model (the z_face linear runs inside forward, so
DDP sees every trained parameter). Metrics go to `ray.train.report` every `report_every` steps; every
`checkpoint_every` steps rank 0 writes a snapshot (`dva.train.snapshot`: weights, EMA, optimiser, step, every
worker's data position, the steps since the previous snapshot, a sample grid) as a Ray checkpoint.

A run lives at `<storage_path>/<name>`. Workers that fail are restarted from the latest checkpoint
(`max_failures`), and running again with the same name and storage path resumes the run the same way. Each step's
randomness (frames drawn, mirroring, t and noise) is seeded by (seed, worker rank, step), so a resumed step draws
as the lost one would have, up to the data stream position (see `dva.train.sampler`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from dva.precision import autocast_dtype
from dva.runtime.cli import EXIT_OK, command_parser, run_command
from dva.runtime.weights import check_checkpoint, load_model
from dva.runtime.cluster import init_ray, limit_threads
from dva.storage import canonical_uri, is_remote, shown
from dva.train.config import TrainJobConfig, load_train_config
from dva.train.loop import TrainState, create_train_state, train_step
from dva.train.preview import pick_preview_rows, sample_grid
from dva.train.sampler import DataPosition, VideoBatchSampler
from dva.train.shards import DatasetInfo, check_dataset, list_shards
from dva.train.snapshot import SAMPLES_FILE, load_snapshot, save_snapshot

log = logging.getLogger("dva.train")

# Test hook: a file path. Rank 0 creates it and raises once, right after its first checkpoint, if it is absent.
FAULT_ENV = "DVA_TRAIN_FAULT_MARKER"
# A report waits until the controller has polled the previous one; Ray's default 2 s poll would cap training at one
# report per 2 s.
POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
DEFAULT_POLL_S = "0.05"


def _all_gather(obj) -> list:
    """`obj` of every worker, by rank ([obj] without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def weight_checksum(state: TrainState) -> float:
    """Sum of every trained weight in float64: equal on all workers exactly when DDP kept them in step."""
    return float(sum(p.detach().double().sum().item() for p in state.module.trainable_parameters()))


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def _write_samples(path: Path, state: TrainState, preview: dict, steps: int) -> None:
    module = state.module
    device = next(module.unet.parameters()).device
    with state.ema.applied_to(module):
        module.eval()
        grid = sample_grid(module, preview["images"].to(device), preview["z_id"].to(device),
                           preview["z_lnd"].to(device), steps, autocast_dtype(state.cfg.amp, device))
    module.train()
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def _resume(state: TrainState, rank: int, world: int) -> tuple[DataPosition, Optional[dict]]:
    """Load the run's latest checkpoint, if any, into `state`: this worker's data position and what was restored."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return DataPosition(), None
    with checkpoint.as_directory() as folder:
        meta = load_snapshot(folder, state)
    positions = meta["data_positions"]
    position = DataPosition(**positions[rank]) if len(positions) == world else DataPosition()
    if rank == 0:
        print(f"[dva] resumed at step {state.step} from {shown(checkpoint.path)}", flush=True)
    ema_sum = float(sum(v.double().sum() for v in state.ema.state_dict().values()))
    return position, {"step": state.step, "ema_sum": ema_sum, "adam_steps": _adam_steps(state)}


def _checkpoint(state: TrainState, cfg: TrainJobConfig, report: dict, meta: dict, preview: dict) -> None:
    """Report `report` with a snapshot of `state` (rank 0 writes it; every worker must call this)."""
    import ray.train

    meta["weight_checksums"] = report["weight_checksums"] = _all_gather(weight_checksum(state))
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(report)
        return
    with tempfile.TemporaryDirectory(prefix="dva-ckpt-") as folder:
        save_snapshot(folder, state, meta)
        _write_samples(Path(folder) / SAMPLES_FILE, state, preview, cfg.samples.steps)
        ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(folder))


def train_loop_per_worker(config: dict) -> None:
    """The function every Ray Train worker runs: `config` = {"cfg": TrainJobConfig, "fault_marker": str | None}."""
    import ray.train
    import ray.train.torch

    cfg: TrainJobConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        limit_threads(cfg.scaling.resources_per_worker.get("CPU", 1))
    torch.manual_seed(cfg.seed)
    state = create_train_state(ray.train.torch.prepare_model(load_model(cfg.model, device)), cfg.optim)
    position, resumed = _resume(state, rank, world)
    shard = ray.train.get_dataset_shard("train")
    sampler = VideoBatchSampler(
        lambda epoch: shard.iter_batches(batch_size=cfg.data.read_batch_rows, batch_format="numpy"), cfg.data,
        position)
    preview: Optional[dict] = None  # rank 0's first batch, one frame per video: the sample grid's inputs
    logged: list[dict] = []  # one entry per step since the last checkpoint
    window: list[dict] = []  # metrics since the last report
    while state.step < cfg.steps:
        step = state.step + 1
        started = time.perf_counter()
        batch, videos = sampler.next_batch(np.random.default_rng([cfg.seed, rank, step]))
        if preview is None and rank == 0:
            rows = pick_preview_rows(videos, cfg.samples.frames)
            preview = {k: batch[k][rows] for k in ("images", "z_id", "z_lnd")}
        data_s = time.perf_counter() - started
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        metrics = train_step(state, batch, torch.Generator(device).manual_seed(_step_seed(cfg.seed, rank, step)))
        window.append({**metrics, "data_s": data_s, "samples_per_s": len(videos) / (time.perf_counter() - started)})
        logged.append({"step": step, "loss": metrics["loss"], "epoch": sampler.position.epoch})

        is_checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.steps
        if not (is_checkpoint or step % cfg.report_every == 0):
            continue
        report = {k: float(np.mean([w[k] for w in window])) for k in window[0] if k != "step"}
        report.update(step=step, epoch=sampler.position.epoch)
        window = []
        if not is_checkpoint:
            ray.train.report(report)
            continue
        meta = {"data_positions": _all_gather(asdict(sampler.checkpoint_position())), "log": logged,
                "resumed": resumed, "world_size": world}
        _checkpoint(state, cfg, report, meta, preview)
        logged, resumed = [], None
        fault_marker = config.get("fault_marker")
        if fault_marker and rank == 0 and not os.path.exists(fault_marker):
            Path(fault_marker).touch()
            raise RuntimeError(f"injected failure after the checkpoint of step {step} ({FAULT_ENV})")


def _adam_steps(state: TrainState) -> int:
    """Adam's own step count (the same for every parameter): shows whether optimiser state was restored."""
    steps = [s["step"] for s in state.optimizer.state_dict()["state"].values()]
    return int(steps[0]) if steps else 0


def checkpoint_uri(checkpoint) -> str:
    """A Ray checkpoint's folder as a path or URI that dva.storage understands."""
    fs_type = type(checkpoint.filesystem).__name__
    if fs_type == "S3FileSystem":
        return f"s3://{checkpoint.path}"
    if fs_type == "GcsFileSystem":
        return f"gs://{checkpoint.path}"
    return checkpoint.path


def run_training(cfg: TrainJobConfig):
    """Fit (or resume) the run `cfg.name` under `cfg.storage_path`; return Ray Train's Result."""
    from ray.data import FileShuffleConfig
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    check_checkpoint(cfg.model)  # before Ray starts, not in every worker
    shards = list_shards(cfg.data.path)
    check_dataset(cfg.data.path, DatasetInfo.of(cfg.model), f"model {cfg.model.name!r}", masks=False)
    os.environ.setdefault(POLL_ENV, DEFAULT_POLL_S)  # read by the Train controller, which fit() starts
    ray = init_ray(cfg.ray_address, cfg.progress)
    dataset = ray.data.read_parquet(shards, shuffle=FileShuffleConfig(seed=cfg.seed))
    backend = cfg.scaling.backend if cfg.scaling.backend != "auto" else ("nccl" if cfg.scaling.use_gpu else "gloo")
    storage = cfg.storage_path if is_remote(cfg.storage_path) else canonical_uri(cfg.storage_path)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "fault_marker": os.environ.get(FAULT_ENV)},
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                     resources_per_worker=dict(cfg.scaling.resources_per_worker)),
        run_config=RunConfig(name=cfg.name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
        datasets={"train": dataset},
    )
    log.info("training %s on %d shards with %d workers → %s/%s", cfg.model.name, len(shards),
             cfg.scaling.num_workers, shown(storage), cfg.name)
    return trainer.fit()


def main(argv: Optional[list[str]] = None, preset: str = "tiny_cpu") -> int:
    """`dva train [--config NAME|YAML] key=value ...` — also the `ray job submit` entrypoint (jobs/train.py)."""
    parser = command_parser("dva train", __doc__.splitlines()[0], config=preset, group="train",
                            example="data.path=s3://b/data storage_path=s3://b/runs name=run1")

    def run(args) -> int:
        result = run_training(load_train_config(args.config, args.overrides))
        if result.checkpoint is None:
            print("[dva] finished without a checkpoint")
            return EXIT_OK
        where = shown(checkpoint_uri(result.checkpoint))
        print(f"[dva] step {result.metrics.get('step')}; latest checkpoint: {where}")
        print(f"[dva] edit with: model.checkpoint={where}/dva.safetensors")
        return EXIT_OK

    return run_command(parser, argv, run)
