"""Ray Train on two CPU workers (gloo DDP): it learns, workers stay in step, failures and reruns resume exactly."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dva.diffusion.losses import dva_loss
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.runtime.weights import load_model
from dva.storage import join
from dva.train.config import TrainDataConfig, load_train_config
from dva.train.preprocess import write_shard
from dva.train.ray_train import FAULT_ENV, checkpoint_uri, run_training
from dva.train.sampler import DataPosition, VideoBatchSampler
from dva.train.shards import DatasetInfo, encode_png, frames_table, shard_schema, shard_uri, write_dataset_info

# A 16-px model with ~0.1 M UNet parameters: each step costs milliseconds, so the tests measure the job, not torch.
SMALL = ["model.unet.image_size=16", "model.unet.model_channels=16", "model.unet.channel_mult=[1,1]",
         "model.unet.attention_resolutions=[]", "model.unet.embed_channels=32", "model.z_face_dim=32",
         "model.identity_encoder.dim=16", "model.landmark_encoder.dim=8"]
VIDEOS, FRAMES = 4, 6


def train_cfg(data: str, storage: str, name: str, steps: int, *extra: str):
    return load_train_config("tiny_cpu", [
        f"data.path={data}", f"storage_path={storage}", f"name={name}", f"steps={steps}", "checkpoint_every=4",
        "num_to_keep=null", "progress=false", "samples.steps=3", "data.buffer_videos=2", "optim.lr=5e-3",
        # Each worker keeps drawing from its first two videos: one Ray Data epoch per worker group, as each costs
        # seconds to start (epoch changes are covered by the sampler test).
        "data.uses_per_video=1000",
        *SMALL, *extra])


def build_dataset(prefix: str, cfg) -> dict[str, torch.Tensor]:
    """VIDEOS shards of FRAMES frames: one coloured blob per video moving over a grey ground, a square mask, random
    codes per video (z_id) and frame (z_lnd). Returns every frame as a training batch."""
    rng = np.random.default_rng(0)
    size, id_dim, lnd_dim = 16, cfg.model.identity_encoder.dim, cfg.model.landmark_encoder.dim
    schema = shard_schema(id_dim, lnd_dim)
    yy, xx = np.mgrid[0:size, 0:size] / size
    crops_all, masks_all, z_id_all, z_lnd_all = [], [], [], []
    for v in range(VIDEOS):
        colour = rng.random(3)
        crops = []
        for f in range(FRAMES):
            blob = np.exp(-((xx - 0.5 - 0.15 * np.sin(f + v)) ** 2 + (yy - 0.5) ** 2) / 0.05)[..., None]
            crops.append(((colour * blob + 0.3 * (1 - blob)) * 255).astype(np.uint8))
        crops = np.stack(crops)
        masks = np.zeros((FRAMES, size, size), bool)
        masks[:, 3:13, 3:13] = True
        z_id = np.repeat(rng.normal(size=(1, id_dim)), FRAMES, axis=0).astype(np.float32)
        z_lnd = rng.random((FRAMES, lnd_dim)).astype(np.float32)
        codes = {"z_id": z_id, "z_lnd": z_lnd, "z_id_flip": -z_id, "z_lnd_flip": 1 - z_lnd}
        table = frames_table(schema, f"video{v}", 0, FRAMES, crops, masks, codes)
        write_shard(shard_uri(prefix, f"video{v}"), iter([table]))
        crops_all.append(crops)
        masks_all.append(masks)
        z_id_all.append(z_id)
        z_lnd_all.append(z_lnd)
    write_dataset_info(prefix, DatasetInfo.of(cfg.model))
    crops = np.concatenate(crops_all)
    return {"images": torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1,
            "mask": torch.from_numpy(np.concatenate(masks_all)[:, None].astype(np.float32)),
            "z_id": torch.from_numpy(np.concatenate(z_id_all)), "z_lnd": torch.from_numpy(np.concatenate(z_lnd_all))}


def held_loss(model, frames: dict[str, torch.Tensor]) -> float:
    """L_simple on every frame at 16 fixed (t, noise) draws: a low-variance measure of what the model learnt."""
    g = torch.Generator().manual_seed(123)
    features = torch.cat([frames["z_id"], frames["z_lnd"]], dim=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on 2 busy cores, 2 threads are several times slower than 1
    try:
        with torch.no_grad():
            return float(np.mean([dva_loss(lambda x, t, c: model(x, t, z_features=c), frames["images"], features,
                                           frames["mask"], generator=g).simple.item() for _ in range(16)]))
    finally:
        torch.set_num_threads(threads)


def snapshots(result) -> list[tuple[int, str, dict]]:
    """(step, local folder, state.json) of every checkpoint of the run, by step."""
    out = []
    for checkpoint, metrics in result.best_checkpoints:
        folder = checkpoint.to_directory()
        with open(os.path.join(folder, "state.json")) as f:
            out.append((int(metrics["step"]), folder, json.load(f)))
    return sorted(out, key=lambda s: s[0])


def initial_model(cfg) -> DiffusionVideoAutoencoder:
    torch.manual_seed(cfg.seed)  # as every worker builds it
    return load_model(cfg.model)


def model_from(cfg, checkpoint: str) -> DiffusionVideoAutoencoder:
    return load_model(dataclasses.replace(cfg.model, checkpoint=checkpoint))


def test_sampler_draws_k_videos_of_m_frames_and_mirrors_with_the_mirror_codes():
    """3 videos of 5 frames arrive in batches of 4 rows; z_lnd = (video, frame), its mirror code (video, frame+100);
    each crop is dark on the left, so a mirrored one is dark on the right."""
    crop = np.zeros((4, 4, 3), np.uint8)
    crop[:, 2:] = 200
    rows = [{"video_id": f"v{v}", "num_frames": 5, "image": encode_png(crop), "mask": encode_png(crop[..., 0]),
             "z_id": np.zeros(2, np.float32), "z_lnd": np.array([v, f], np.float32),
             "z_id_flip": np.ones(2, np.float32), "z_lnd_flip": np.array([v, f + 100], np.float32)}
            for v in range(3) for f in range(5)]
    batches = [{k: [r[k] for r in rows[i:i + 4]] for k in rows[0]} for i in range(0, len(rows), 4)]
    cfg = TrainDataConfig(videos_per_step=2, frames_per_video=3, buffer_videos=2, uses_per_video=1)
    # A checkpoint after one draw (v0, v1 used up) resumes where v2, still buffered, began: nothing is lost.
    sampler = VideoBatchSampler(lambda epoch: iter(batches), cfg)
    sampler.next_batch(np.random.default_rng(0))
    assert sampler.checkpoint_position() == DataPosition(0, 10)
    resumed = VideoBatchSampler(lambda epoch: iter(batches), cfg, sampler.checkpoint_position())
    assert set(resumed.next_batch(np.random.default_rng(1))[1]) == {"v2", "v0"} and resumed.position.epoch == 1

    sampler = VideoBatchSampler(lambda epoch: iter(batches), cfg)
    drawn, mirrored_rows = Counter(), 0
    for step in range(6):
        batch, videos = sampler.next_batch(np.random.default_rng(step))
        assert batch["images"].shape == (6, 3, 4, 4) and batch["mask"].shape == (6, 1, 4, 4)
        video, frame = batch["z_lnd"][:, 0].long(), batch["z_lnd"][:, 1].long()
        assert [f"v{v}" for v in video.tolist()] == videos
        assert len(set(videos)) == 2 and all(len(set((frame[i:i + 3] % 100).tolist())) == 3 for i in (0, 3))
        mirrored = frame >= 100
        assert torch.equal(batch["z_id"][:, 0] == 1, mirrored)  # mirrored rows carry the mirror codes...
        assert torch.equal(batch["images"][:, 0, 0, 0] < 0, ~mirrored)  # ...the mirrored crop...
        assert torch.equal(batch["mask"][:, 0, 0, 0] == 0, ~mirrored)  # ...and the mirrored mask
        drawn.update(set(videos))
        mirrored_rows += int(mirrored.sum())
    # uses_per_video=1: each video once per epoch; an epoch's last video is drawn beside the next epoch's first
    assert drawn == {"v0": 4, "v1": 4, "v2": 4} and sampler.position.epoch >= 3
    assert 0 < mirrored_rows < 36


@pytest.fixture(scope="module")
def local_run(s3_server, ray_local, tmp_path_factory):  # S3 settings first: Ray workers inherit them at start
    """12 steps on local storage; rank 0 fails once right after the checkpoint of step 4 (max_failures=1)."""
    root = tmp_path_factory.mktemp("train")
    data = str(root / "data")
    cfg = train_cfg(data, str(root / "runs"), "resume", 12)
    frames = build_dataset(data, cfg)
    marker = root / "failed-once"
    os.environ[FAULT_ENV] = str(marker)
    try:
        result = run_training(cfg)
    finally:
        del os.environ[FAULT_ENV]
    return cfg, result, frames, marker


def test_failure_resumes_from_the_checkpoint_with_every_step_once(local_run):
    cfg, result, _, marker = local_run
    assert marker.exists() and result.error is None  # the failure happened and the run still finished
    snaps = snapshots(result)
    assert [s[0] for s in snaps] == [4, 8, 12]
    steps = [entry["step"] for _, _, meta in snaps for entry in meta["log"]]
    assert steps == list(range(1, 13)), steps  # the lineage of the final weights: no step lost or repeated
    # The restarted workers began from checkpoint 4: its step, its EMA and its optimiser state.
    _, folder4, meta4 = snaps[0]
    resumed = snaps[1][2]["resumed"]
    assert meta4["resumed"] is None and resumed["step"] == 4 and resumed["adam_steps"] == 4
    ema4 = load_file(os.path.join(folder4, "dva.safetensors"))
    assert resumed["ema_sum"] == pytest.approx(sum(float(v.double().sum()) for v in ema4.values()), rel=1e-9)
    adam = torch.load(os.path.join(snaps[-1][1], "optimizer.pt"), weights_only=True)["optimizer"]["state"]
    assert {int(s["step"]) for s in adam.values()} == {12}
    for _, _, meta in snaps:  # DDP kept both workers' weights identical
        assert len(meta["weight_checksums"]) == 2 and meta["weight_checksums"][0] == meta["weight_checksums"][1]
        assert len(meta["data_positions"]) == 2


def test_training_lowers_the_loss_and_exports_an_edit_job_checkpoint(local_run):
    cfg, result, frames, _ = local_run
    folder = snapshots(result)[-1][1]
    before = held_loss(initial_model(cfg), frames)
    after = held_loss(model_from(cfg, os.path.join(folder, "model.safetensors")), frames)
    assert after < 0.8 * before, (before, after)
    # The exported EMA file loads as `model.checkpoint` with no conversion and holds the EMA weights.
    model = model_from(cfg, checkpoint_uri(result.checkpoint) + "/dva.safetensors")
    ema = load_file(os.path.join(folder, "dva.safetensors"))
    assert all(torch.equal(v, ema[k]) for k, v in model.trainable_state_dict().items())
    import cv2

    grid = cv2.imread(os.path.join(folder, "samples.png"))
    assert grid.shape == (3 * 16, cfg.samples.frames * 16, 3)


@pytest.mark.slow
def test_a_second_fit_with_the_same_name_resumes(local_run):
    cfg, first, _, _ = local_run
    cfg = train_cfg(cfg.data.path, cfg.storage_path, "resume", 16)
    snaps = snapshots(run_training(cfg))
    assert [s[0] for s in snaps] == [4, 8, 12, 16]
    assert snaps[-1][2]["resumed"]["step"] == 12 and snaps[-1][2]["resumed"]["adam_steps"] == 12
    assert [e["step"] for e in snaps[-1][2]["log"]] == [13, 14, 15, 16]


@pytest.mark.slow
def test_training_from_and_to_s3(s3_server, ray_local, s3_bucket):
    data, runs = join(s3_bucket, "data"), join(s3_bucket, "runs")
    cfg = train_cfg(data, runs, "s3run", 8)
    frames = build_dataset(data, cfg)
    result = run_training(cfg)
    assert checkpoint_uri(result.checkpoint).startswith(f"{s3_bucket}/runs/s3run/")
    snaps = snapshots(result)
    assert [s[0] for s in snaps] == [4, 8]
    assert [e["step"] for _, _, m in snaps for e in m["log"]] == list(range(1, 9))
    assert all(m["weight_checksums"][0] == m["weight_checksums"][1] for _, _, m in snaps)
    trained = model_from(cfg, checkpoint_uri(result.checkpoint) + "/model.safetensors")  # fetched from S3
    assert held_loss(trained, frames) < 0.8 * held_loss(initial_model(cfg), frames)
