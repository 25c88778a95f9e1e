"""`dva preprocess`: face videos → training shards (aligned crops, z codes, masks), on Ray Data.

    PreprocessStage (CPU actors, one video per call): track → crops at the model's size → z_id, z_lnd of the crop
    and of its mirror image, training mask → one Parquet shard per video, committed whole → its manifest row

The front end is the edit job's (`align_video`, `iter_crops`, `crops_to_tensor`). Masks are the face parser's
training mask when `model.face_parser` is set, else the landmark hull of the track's points. A shard appears only
complete, then its manifest row, so a rerun skips exactly the videos done and retries the failed ones. Layout and
columns: `dva.train.shards`.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dva.errors import DvaError, VideoError
from dva.face.crop_video import align_video
from dva.face.landmarker import FaceLandmarker, build_landmarker
from dva.face.warp import iter_crops
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.runtime.weights import check_checkpoint, load_model

from dva.runtime.inputs import discover_inputs
from dva.runtime.manifest import JobSummary, ResultRow, read_manifest, write_result, write_summary
from dva.frontend import training_masks
from dva.crops import crops_to_tensor
from dva.runtime.cli import command_parser, run_command
from dva.runtime.cluster import actor_pool, init_ray, limit_threads, stage_device
from dva.storage import atomic_output, canonical_uri, join, list_files, shown
from dva.train.config import PreprocessJobConfig, load_preprocess_config
from dva.train.shards import (
    SHARDS,
    DatasetInfo,
    check_dataset,
    frames_table,
    shard_schema,
    shard_uri,
    write_dataset_info,
)
from dva.video import iter_frames
from dva.video.decode import stack_chunks

log = logging.getLogger("dva.preprocess")

@torch.no_grad()
def video_tables(uri: str, video_id: str, cfg: PreprocessJobConfig, landmarker: FaceLandmarker,
                 model: DiffusionVideoAutoencoder, device: torch.device) -> Iterator[pa.Table]:
    """The rows of one video, `cfg.chunk_frames` frames at a time (two decodes: landmark track, then crops)."""
    track = align_video(uri, landmarker, cfg.face)
    schema = shard_schema(cfg.model.identity_encoder.dim, cfg.model.landmark_encoder.dim)
    start = 0
    for crops in stack_chunks(iter_crops(iter_frames(uri), track.quads, track.crop_size), cfg.chunk_frames):
        images = crops_to_tensor(crops).to(device)
        mirrored = images.flip(-1)
        codes = {"z_id": model.encode_identity(images), "z_lnd": model.encode_landmarks(images),
                 "z_id_flip": model.encode_identity(mirrored), "z_lnd_flip": model.encode_landmarks(mirrored)}
        masks = training_masks(model, track, images, start, cfg.face.mask.brow_lift)
        yield frames_table(schema, video_id, start, len(track), crops, masks,
                           {k: v.cpu().numpy() for k, v in codes.items()})
        start += len(crops)
    if start != len(track):
        raise VideoError(f"{uri}: the crop pass decoded {start} frames, the landmark pass {len(track)}")

def write_shard(uri: str, tables: Iterator[pa.Table]) -> int:
    """Write the tables as row groups of one Parquet file that appears at `uri` only when complete; return rows."""
    rows = 0
    with atomic_output(uri) as tmp:
        writer: Optional[pq.ParquetWriter] = None
        try:
            for table in tables:
                writer = writer or pq.ParquetWriter(str(tmp), table.schema)
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows

class PreprocessStage:
    """One video per call → its shard and manifest row; yields one status row (never raises for a bad video)."""

    def __init__(self, cfg: PreprocessJobConfig):
        limit_threads(cfg.frontend.num_cpus)
        self.cfg = cfg
        self.device = stage_device(cfg.frontend.num_gpus)
        self.model = load_model(cfg.model, self.device, with_unet=False)  # only the encoders and the face parser
        self.landmarker = build_landmarker(cfg.face, "face.")

    def __call__(self, batch: dict) -> Iterator[dict]:
        limit_threads(self.cfg.frontend.num_cpus)
        for uri, video_id in zip(batch["uri"], batch["video_id"]):
            row = self.process(str(uri), str(video_id))
            write_result(self.cfg.output, row)
            yield {"video": [row.video], "status": [row.status], "error": [row.error or ""],
                   "frames": [row.frames or 0]}

    def process(self, uri: str, video_id: str) -> ResultRow:
        started = time.time()
        target = shard_uri(self.cfg.output, video_id)
        try:
            frames = write_shard(target, video_tables(uri, video_id, self.cfg, self.landmarker, self.model,
                                                      self.device))
        except DvaError as err:
            return ResultRow(uri, video_id, "", "failed", error=str(err), seconds=time.time() - started)
        except Exception as err:  # a bug or an unexpected input: recorded, the job goes on
            return ResultRow(uri, video_id, "", "failed", error=f"{type(err).__name__}: {err}",
                             seconds=time.time() - started)
        return ResultRow(uri, video_id, "", "ok", frames=frames, seconds=time.time() - started, output=target)

def completed_videos(output: str) -> set[str]:
    """Ids of the videos whose manifest row says ok and whose shard exists (one listing, not one check per row)."""
    shards = {canonical_uri(u) for u in list_files(join(output, SHARDS), (".parquet",))}
    return {r["video_id"] for r in read_manifest(output).to_pylist()
            if r["status"] == "ok" and r["output"] and canonical_uri(r["output"]) in shards}

def run_preprocess(cfg: PreprocessJobConfig) -> JobSummary:
    """Write the shards of every input video not yet done under `cfg.output`; return counts."""
    started = time.time()
    check_checkpoint(cfg.model, with_unet=False)  # before Ray starts, not in every actor
    videos = discover_inputs(cfg.input)
    info = DatasetInfo.of(cfg.model)
    check_dataset(cfg.output, info, "this preprocess config", masks=True)
    write_dataset_info(cfg.output, info)
    done = completed_videos(cfg.output)
    tasks = [{"uri": v.uri, "video_id": v.video_id} for v in videos if v.video_id not in done]
    summary = JobSummary(skipped=len(videos) - len(tasks))
    log.info("%d videos, %d to preprocess, %d already done", len(videos), len(tasks), summary.skipped)
    if tasks:
        ray = init_ray(cfg.ray_address, cfg.progress)
        ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))
        ds = ds.map_batches(PreprocessStage, fn_constructor_kwargs={"cfg": cfg}, batch_size=1,
                            compute=actor_pool(cfg.frontend), **cfg.frontend.ray_options())
        for r in ds.iter_rows():
            if r["status"] == "ok":
                summary.ok += 1
                summary.frames += int(r["frames"])
                print(f"[dva] done   {shown(r['video'])} ({r['frames']} frames)", flush=True)
                continue
            summary.failed += 1
            summary.failures.append(shown(f"{r['video']}: {r['error']}"))
            print(f"[dva] FAILED {summary.failures[-1]}", flush=True)
            if cfg.fail_fast:
                raise DvaError(f"fail_fast: {r['video']} failed: {r['error']}")
    summary.manifest = write_summary(cfg.output)
    summary.seconds = time.time() - started
    return summary

def main(argv: Optional[list[str]] = None, preset: str = "local_tiny") -> int:
    """`dva preprocess [--config NAME|YAML] key=value ...` — also the `ray job submit` entrypoint."""
    parser = command_parser("dva preprocess", __doc__.splitlines()[0], config=preset, group="preprocess",
                            example="input=s3://b/raw output=s3://b/data")

    def run(args) -> int:
        summary = run_preprocess(load_preprocess_config(args.config, args.overrides))
        print(f"[dva] {summary.ok} ok ({summary.frames} frames), {summary.failed} failed, {summary.skipped} already "
              f"done in {summary.seconds:.1f} s; manifest: {shown(summary.manifest)}")
        for line in summary.failures:
            print(f"[dva]   failed: {line}")
        return summary.exit_code

    return run_command(parser, argv, run)
