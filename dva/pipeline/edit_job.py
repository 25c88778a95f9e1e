"""The batch edit job on Ray Data: videos in (prefix or manifest), edited videos + manifest out (local or s3://).

    stage A  PrepareStage  (CPU actors, one video per call)  decode → track → crops → z_id mean, z_lnd → chunks
                                                              (+ a cached CLIP direction per clip edit)
    stage B  GenerateStage (GPU actors, batches of chunks)    DDIM inversion once, one generation per edit
    stage C  finalize task (CPU, per video and edit)          paste back → H.264 + source audio → commit → manifest

Stages A and B stream through Ray Data; the driver reads stage B's small result rows as they come, and when every
chunk of a (video, edit) is done it starts that pair's stage C task. Each pair commits its video, then its manifest
row, so a rerun skips exactly the pairs that finished; nothing partial is ever visible as done.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from typing import Callable, Optional, Sequence

from dva.errors import ConfigError, DvaError, StorageError
from dva.runtime.weights import check_checkpoint
from dva.pipeline.config import EditJobConfig
from dva.pipeline.fingerprint import PairFingerprints
from dva.runtime.config import RANDOM_WEIGHTS_WARNING, load_job_config
from dva.pipeline.edit_resolution import (check_clip_weights, direction_record_uri, has_clip_edits, parse_job_edits,
                                read_direction_record, write_direction_record)
from dva.frontend import VideoTask
from dva.runtime.inputs import VideoInput, discover_inputs
from dva.latents import LatentKey, LatentStore
from dva.runtime.cli import command_parser, run_command
from dva.runtime.cluster import actor_pool, init_ray, limit_threads
from dva.runtime.manifest import JobSummary, ResultRow, completed, edit_id, write_result, write_summary
from dva.storage import (check_weight_files, file_stamp, join, remove_empty_folder, remove_prefix,
                         shown, sweep_partials)

log = logging.getLogger("dva.edit")
ENCODE_OVERRIDES = ("edits=[]", "store_latents=true")  # `dva encode` is `dva edit` with these


def _stamp(uri: str) -> str:
    """The input's `file_stamp`; "" when it cannot be read (stage A then records why, for that video alone)."""
    try:
        return file_stamp(uri)
    except StorageError:
        return ""


def _edits_for(video: VideoInput, job_edits: Sequence[str]) -> list[str]:
    return list(video.edits) if video.edits is not None else list(job_edits)


def _finalize_pair(cfg: EditJobConfig, uri: str, key: str, video_id: str, edit: str, faces: dict[int, int],
                   started: float, fingerprint: str) -> dict:
    """Stage C for one (video, edit) whose faces `faces` ({track: chunks}) were edited, run as a Ray task; returns
    the manifest row as a dict (never raises)."""
    from dva.pipeline.finalize import finalize_video, paste_masker

    try:
        direction = read_direction_record(cfg.output, video_id, edit, list(faces))  # clip edits: the files used
        limit_threads(cfg.writer.num_cpus)  # the face parser's share of the node
        target, frames, fps = finalize_video(cfg.output, uri, key, video_id, edit, faces, cfg.face,
                                             paste_masker(cfg.model))
        row = _result_row(cfg, uri, video_id, edit, "ok", frames=frames, fps=fps, seconds=time.time() - started,
                          output=target, direction=direction.get("uri"), direction_cached=direction.get("cached"),
                          fingerprint=fingerprint, faces=",".join(map(str, sorted(faces))))
    except Exception as err:  # recorded in the manifest; the job goes on
        row = _result_row(cfg, uri, video_id, edit, "failed", error=f"{type(err).__name__}: {err}",
                          seconds=time.time() - started)
    write_result(cfg.output, row)
    remove_prefix(join(cfg.output, ".work", video_id, edit_id(edit)))
    remove_empty_folder(join(cfg.output, ".work", video_id))  # the video's last pair leaves no folder behind
    remove_empty_folder(join(cfg.output, ".work"))
    return {"video": row.video, "edit": row.edit, "status": row.status, "error": row.error, "frames": row.frames,
            "output": row.output}


def _result_row(cfg: EditJobConfig, *args, **fields) -> ResultRow:
    """A manifest row of this job: every row says whether the UNet had random weights (`random_weights`)."""
    return ResultRow(*args, random_weights=cfg.random_weights, **fields)


def pending_tasks(output: str, videos: Sequence[VideoInput], job_edits: Sequence[str],
                  fingerprints: Optional[PairFingerprints] = None) -> tuple[list[dict], int]:
    """The videos with edits still to do under `output` (each with those edits; none: encode only) and the number
    of (video, edit) pairs already done there, which a rerun skips. With the job's `fingerprints`, a pair counts as
    done only when its output was made from the same input bytes, weights, settings and edit files (the row's
    fingerprint); each task carries its pairs' fingerprints ({edit: fingerprint}, "" for encode only)."""
    stamps = {v.video_id: _stamp(v.uri) for v in videos}
    made_from = {v.video_id: {e: fingerprints(stamps[v.video_id], e) if fingerprints is not None else ""
                              for e in ["", *_edits_for(v, job_edits)]} for v in videos}
    # an output of a replaced input, other weights or settings, or an edit file replaced in place is made again
    done = completed(output, {(vid, edit_id(e)): f for vid, by_edit in made_from.items() for e, f in by_edit.items()}
                     if fingerprints is not None else None)
    tasks, skipped = [], 0
    for v in videos:
        todo = [e for e in _edits_for(v, job_edits) if (v.video_id, edit_id(e)) not in done]
        skipped += len(_edits_for(v, job_edits)) - len(todo)
        if todo or (not job_edits and (v.video_id, edit_id("")) not in done):
            tasks.append({"uri": v.uri, "key": v.key, "video_id": v.video_id, "edits": todo,
                          "source": stamps[v.video_id],
                          "fingerprints": made_from[v.video_id]})
    return tasks, skipped


def run_edit_job(cfg: EditJobConfig) -> JobSummary:
    """Run the job over every input not yet done; return counts (also written to the manifest)."""
    started = time.time()
    if cfg.random_weights:
        print(f"[dva] warning: {RANDOM_WEIGHTS_WARNING}", flush=True)
    job_edits = parse_job_edits(cfg.edits)  # bad specs fail here, before Ray starts
    check_weight_files({**cfg.model.weight_files("model."), **cfg.face.weight_files("face.")})  # and wrong paths
    check_checkpoint(cfg.model)  # and a checkpoint that does not fit the model
    videos = discover_inputs(cfg.input)
    if cfg.sweep_partials_after_s is not None:
        swept = sweep_partials(cfg.output, cfg.sweep_partials_after_s)
        if swept:
            log.info("removed %d unfinished temporary file(s) older than %.0f s under %s", swept,
                     cfg.sweep_partials_after_s, shown(cfg.output))
    from dva.pipeline.stages import latent_key

    # hashes the weights and every file an edit references: once, here
    tasks, skipped = pending_tasks(cfg.output, videos, job_edits, PairFingerprints(cfg, latent_key(cfg)))
    summary = JobSummary(skipped=skipped)
    log.info("%d videos, %d to process, %d (video, edit) pairs already done", len(videos), len(tasks),
             summary.skipped)
    clip_edits = has_clip_edits([e for t in tasks for e in t["edits"]])
    if clip_edits:
        check_clip_weights(cfg)  # before Ray starts, not once per video
    if tasks and clip_edits and cfg.store_latents and cfg.reuse_latents:
        _run_clip_edits_beside_inversion(cfg, tasks, summary)
    elif tasks:
        _run(cfg, tasks, summary, clip_edits)
    summary.manifest = write_summary(cfg.output)
    summary.seconds = time.time() - started
    return summary


def _record(cfg: EditJobConfig, summary: JobSummary, row: dict) -> None:
    """Count a finished (video, edit) and print one line for it."""
    status = row["status"]
    if status == "ok":
        summary.ok += 1
        print(shown(f"[dva] done   {row['video']} [{row['edit'] or 'encode'}] → {row['output']} "
                    f"({row['frames']} frames)"), flush=True)
    else:
        summary.failed += 1
        summary.failures.append(shown(f"{row['video']} [{row['edit']}]: {row['error']}"))
        print(f"[dva] FAILED {summary.failures[-1]}", flush=True)
        if cfg.fail_fast:
            raise DvaError(f"fail_fast: {row['video']} failed: {row['error']}")


def _record_failure(cfg: EditJobConfig, summary: JobSummary, uri: str, video_id: str, edits: Sequence[str],
                    error: str) -> None:
    for e in edits:
        row = _result_row(cfg, uri, video_id, e, "failed", error=error)
        write_result(cfg.output, row)
        _record(cfg, summary, {"video": row.video, "edit": row.edit, "status": "failed", "error": row.error})


def clip_task(ray, cfg: EditJobConfig):
    """The Ray task that optimises a video's clip directions, asking for the `clip_task` resources."""
    from dva.pipeline import stages

    return ray.remote(**cfg.clip_task.ray_options())(stages.optimise_video_clip_edits)


class _ClipDirectionTasks:
    """Pass 1's Ray tasks that optimise each video's clip directions, one per video, each started when stage B
    returns that video's first row (so it overlaps the inversion of the rest of the video)."""

    def __init__(self, ray, cfg: EditJobConfig, tasks: list[dict]):
        self.ray, self.cfg = ray, cfg
        self.optimise = clip_task(ray, cfg)
        self.tasks = {t["video_id"]: t for t in tasks}
        self.clip_edits = {vid: [e for e in t["edits"] if has_clip_edits([e])] for vid, t in self.tasks.items()}
        self.refs = {}

    def other_edits(self, task: dict) -> dict:
        """`task` with its clip edits left out: what pass 1 does for the video."""
        return {**task, "edits": [e for e in task["edits"] if e not in self.clip_edits[task["video_id"]]]}

    def start(self, video_id: str) -> None:
        """Start the video's task, once, if it has clip edits."""
        edits = self.clip_edits[video_id]
        if edits and video_id not in self.refs:
            t = self.tasks[video_id]
            print(f"[dva] optimising {len(edits)} CLIP direction(s) of {shown(t['uri'])} while its frames "
                  "are inverted", flush=True)
            self.refs[video_id] = self.optimise.remote(self.cfg, VideoTask(t["uri"], t["key"], video_id, edits,
                                                                           t["source"]))

    def second_pass(self, summary: JobSummary, failed: set[str]) -> list[dict]:
        """Wait for every task; note each direction beside its pair's work files and return the tasks of pass 2
        (each video's clip edits). A video that failed in pass 1 is skipped (its clip edits were recorded failed
        with the rest); one whose optimisation fails gets its clip edits recorded failed, and other videos go on."""
        second = []
        for vid, ref in self.refs.items():
            if vid in failed:
                continue
            try:
                directions = self.ray.get(ref)
            except Exception as err:
                cause = getattr(err, "cause", None) or err
                _record_failure(self.cfg, summary, self.tasks[vid]["uri"], vid, self.clip_edits[vid],
                                f"{type(cause).__name__}: {cause}")
                continue
            for edit, by_face in directions.items():
                for face, d in by_face.items():
                    write_direction_record(direction_record_uri(self.cfg.output, vid, edit, face), d["uri"],
                                           d["cached"])
            second.append({**self.tasks[vid], "edits": self.clip_edits[vid]})
        return second


def _run_clip_edits_beside_inversion(cfg: EditJobConfig, tasks: list[dict], summary: JobSummary) -> None:
    """Clip edits in two passes (see `dva.pipeline.edit_resolution`): pass 1 runs every other edit and inverts every
    video while each video's directions are optimised beside it; pass 2 decodes the clip edits from the stored x_T
    with the directions from the cache."""
    directions = _ClipDirectionTasks(init_ray(cfg.ray_address, cfg.progress), cfg, tasks)
    first = [directions.other_edits(t) for t in tasks]
    failed = _run(cfg, first, summary, False, on_video_started=directions.start,
                  quiet_encodes=frozenset(t["video_id"] for t in first if not t["edits"]),
                  failure_edits={t["video_id"]: t["edits"] for t in tasks})
    second = directions.second_pass(summary, failed)
    if second:
        _run(cfg, second, summary, True, count_frames=False)


def _start_stages(ray, cfg: EditJobConfig, tasks: list[dict], key: LatentKey, clip_edits: bool):
    """Stages A and B over `tasks` as one Ray Data stream of stage B's result rows (it starts when read)."""
    from dva.pipeline.stages import GenerateStage, PrepareStage

    # Ray Data restarts a lost stage actor and retries its batch by itself.
    # Stage A reads a task's `VideoTask` fields; the driver keeps the rest (the pairs' fingerprints).
    items = [{k: t[k] for k in ("uri", "key", "video_id", "edits", "source")} for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=len(tasks))
    ds = ds.map_batches(PrepareStage, fn_constructor_kwargs={"cfg": cfg, "key": key, "clip_edits": clip_edits},
                        batch_size=1, compute=actor_pool(cfg.frontend), **cfg.frontend.ray_options())
    return ds.map_batches(GenerateStage, fn_constructor_kwargs={"cfg": cfg},
                          batch_size=max(1, cfg.generate.batch_frames // cfg.chunk_frames),
                          compute=actor_pool(cfg.generate), **cfg.generate.ray_options())


class _PassResults:
    """The driver's side of one pass: takes stage B's result rows, gathers the chunks of each (video, edit) over the
    faces it addresses, starts the pair's stage C task when its last chunk is back, commits each face's x_T once
    every chunk of it is stored, and records every finished pair in the manifest."""

    def __init__(self, ray, cfg: EditJobConfig, tasks: list[dict], summary: JobSummary, key: LatentKey, *,
                 on_video_started: Optional[Callable[[str], None]], quiet_encodes: frozenset,
                 failure_edits: dict[str, list[str]], count_frames: bool):
        self.ray, self.cfg, self.summary, self.key = ray, cfg, summary, key
        self.on_video_started, self.quiet_encodes = on_video_started, quiet_encodes
        self.failure_edits, self.count_frames = failure_edits, count_frames
        # A stage C task lost with its worker is run again, `writer.retries` times.
        self.finalize = ray.remote(**cfg.writer.ray_options(), max_retries=cfg.writer.retries)(_finalize_pair)
        self.tasks = {t["video_id"]: t for t in tasks}
        self.started = {vid: time.time() for vid in self.tasks}
        self.chunks_done: dict[tuple[str, str], set[tuple[int, int]]] = defaultdict(set)  # (face, chunk)
        self.pair_faces: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)  # {face: its chunks}
        self.face_chunks: dict[tuple[str, int], set[int]] = defaultdict(set)  # chunks of a face back (any edit)
        self.finished: set[tuple[str, str]] = set()  # (video, edit) pairs whose every chunk came back
        self.failed: set[str] = set()
        self.pending = []  # stage C tasks not recorded yet

    def take(self, row: dict) -> None:
        """One stage B row: a chunk of a (video, edit), or the error of a video (whose later rows are dropped)."""
        vid = row["video_id"]
        self.summary.unet_calls += int(row["unet_calls"])
        if vid in self.failed:
            return
        if row["error"]:
            self._fail_video(row)
            return
        if self.on_video_started is not None:
            self.on_video_started(vid)
        if self._add_chunk(row):
            self._complete_pair(row)
            self._collect(block=False)

    def _fail_video(self, row: dict) -> None:
        """Record the video failed for its edits not yet handed to stage C."""
        vid = row["video_id"]
        self.failed.add(vid)
        edits = self.failure_edits.get(vid, self.tasks[vid]["edits"]) or [""]
        _record_failure(self.cfg, self.summary, row["uri"], vid, [e for e in edits if (vid, e) not in self.finished],
                        row["error"])

    def _add_chunk(self, row: dict) -> bool:
        """Note the chunk as done (count its frames once per face, whatever the edits; commit the face's x_T after
        its last chunk); whether it was the last one of its (video, edit)."""
        vid, edit, face, chunk = row["video_id"], str(row["edit"]), int(row["face"]), int(row["chunk"])
        done = self.chunks_done[(vid, edit)]
        done.add((face, chunk))
        self.pair_faces[(vid, edit)][face] = int(row["num_chunks"])
        stored = self.face_chunks[(vid, face)]
        if chunk not in stored:
            stored.add(chunk)
            if self.count_frames:
                self.summary.frames += int(row["frames"])
            if len(stored) == int(row["num_chunks"]) and self.cfg.store_latents:
                LatentStore(self.cfg.output, vid).commit_x_T(face, self.key, int(row["num_chunks"]),
                                                             self.tasks[vid]["source"])
        return len(done) >= json.loads(row["pair_chunks"])[edit]

    def _complete_pair(self, row: dict) -> None:
        """Every chunk of the pair is back: start the pair's stage C task, or for an encode-only video record its
        latents as the output."""
        vid, edit = row["video_id"], str(row["edit"])
        task = self.tasks[vid]
        self.finished.add((vid, edit))
        if edit:
            self.pending.append(self.finalize.remote(self.cfg, row["uri"], row["key"], vid, edit,
                                                     self.pair_faces[(vid, edit)], self.started[vid],
                                                     task["fingerprints"][edit]))
        elif vid not in self.quiet_encodes:
            self._record_encoded(row)

    def _record_encoded(self, row: dict) -> None:
        vid = row["video_id"]
        result = _result_row(self.cfg, row["uri"], vid, "", "ok", frames=int(row["num_frames"]),
                             seconds=time.time() - self.started[vid],
                             output=join(LatentStore(self.cfg.output, vid).root, "meta.json"),
                             fingerprint=self.tasks[vid]["fingerprints"][""])
        write_result(self.cfg.output, result)
        _record(self.cfg, self.summary, {"video": result.video, "edit": "", "status": "ok", "frames": result.frames,
                                         "output": result.output})

    def _collect(self, block: bool) -> None:
        """Record finished stage C tasks (one line each); with `block`, until none is left."""
        while self.pending:
            ready, self.pending = self.ray.wait(self.pending, num_returns=1, timeout=None if block else 0)
            for ref in ready:
                _record(self.cfg, self.summary, self.ray.get(ref))
            if not ready:
                return

    def finish(self) -> set[str]:
        """Wait for every stage C task, remove the work files of the failed videos' chunks that did get through;
        return the ids of those videos."""
        self._collect(block=True)
        for vid in self.failed:
            remove_prefix(join(self.cfg.output, ".work", vid))
        remove_empty_folder(join(self.cfg.output, ".work"))
        return self.failed


def _run(cfg: EditJobConfig, tasks: list[dict], summary: JobSummary, clip_edits: bool, *,
         on_video_started: Optional[Callable[[str], None]] = None, quiet_encodes: frozenset = frozenset(),
         failure_edits: Optional[dict[str, list[str]]] = None, count_frames: bool = True) -> set[str]:
    """One pass of the pipeline over `tasks`; returns the ids of the videos that failed. `on_video_started(video_id)`
    is called at each stage-B row of a video that stage A prepared; videos in `quiet_encodes` are inverted without a
    manifest row of their own; a video that fails (in stage A, or in stage B for any of its chunks) is recorded as
    failed for those of `failure_edits[video_id]` (default: its edits in this pass) not already handed to stage C,
    and its later rows are dropped."""
    ray = init_ray(cfg.ray_address, cfg.progress)
    from dva.pipeline.stages import latent_key

    key = latent_key(cfg)  # hashed once per process: the stages get the result
    results = _PassResults(ray, cfg, tasks, summary, key, on_video_started=on_video_started,
                           quiet_encodes=quiet_encodes, failure_edits=failure_edits or {}, count_frames=count_frames)
    for row in _start_stages(ray, cfg, tasks, key, clip_edits).iter_rows():
        results.take(row)
    return results.finish()


def print_summary(summary: JobSummary, output: str) -> None:
    print(f"[dva] {summary.ok} ok, {summary.failed} failed, {summary.skipped} already done "
          f"in {summary.seconds:.1f} s; manifest: {shown(summary.manifest)}")
    if summary.frames:
        print(f"[dva] {summary.frames} face frames (a frame with two faces counts twice), "
              f"{summary.unet_calls / summary.frames:.1f} UNet calls per face frame")
    for line in summary.failures:
        print(f"[dva]   failed: {line}")
    print(f"[dva] outputs under {shown(output)}")


def job_config_from_arguments(config: str, arguments: Sequence[str]) -> EditJobConfig:
    """The job config of a command line: `key=value` overrides, where each `edit=SPEC` (repeatable) adds one edit
    spec as written, with no list quoting: `edit=clip:"face":"face with beard":0.5 edit=reconstruct`."""
    specs = [a.split("=", 1)[1] for a in arguments if a.startswith("edit=")]
    overrides = [a for a in arguments if not a.startswith("edit=")]
    if specs and any(o.startswith("edits=") for o in overrides):
        raise ConfigError("give the edits either as `edit=SPEC` arguments or as one `edits=[...]` list, not both")
    cfg = load_job_config(EditJobConfig, config, overrides)
    if specs:
        cfg.edits = parse_job_edits(specs)
    return cfg


def main(argv: Optional[list[str]] = None, encode_only: bool = False) -> int:
    """`dva edit [--config NAME|YAML] key=value ...` — also the `ray job submit` entrypoint (jobs/edit.py)."""
    parser = command_parser(
        "dva encode" if encode_only else "dva edit",
        "Encode a dataset of face videos (mean z_id, z_lnd, quads, x_T per video) on Ray." if encode_only
        else "Edit a dataset of face videos on Ray.",
        config="local_tiny", group="edit", example="input=s3://b/in output=s3://b/out; edit=SPEC (repeatable) adds "
        "an edit spec, e.g. edit=classifier:Smiling:1.5")

    def run(args) -> int:
        cfg = job_config_from_arguments(args.config, [*args.overrides, *ENCODE_OVERRIDES] if encode_only
                                        else args.overrides)
        summary = run_edit_job(cfg)
        print_summary(summary, cfg.output)
        return summary.exit_code

    return run_command(parser, argv, run)


def encode_main(argv: Optional[list[str]] = None) -> int:
    """`dva encode`: stages A and B without generation; the latents under `<output>/latents/` are the result."""
    return main(argv, encode_only=True)
