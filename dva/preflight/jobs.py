"""Which checks and which plan each job runs, and how each loads its config (the job's own loader)."""

from __future__ import annotations

import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from dva.preflight.checks import (Request, check_files_exist, check_loads, check_model, check_output,
                                  check_resources, configured_files, face_files)
from dva.preflight.plan import (PROBE_THREADS, Container, EditWork, describe_bytes, describe_cpu_hours,
                                describe_gpu_hours, frontend_cpu_s, probe_videos)
from dva.preflight.report import WARN, Report
from dva.storage import is_remote, list_files, redact

SHOWN_PROBLEMS = 3  # unreadable videos named in the plan; the rest are counted


@dataclass(frozen=True)
class Job:
    group: str  # its presets are configs/<group>/
    preset: str  # the preset the job command uses without --config
    load: Callable[[str, Sequence[str]], Any]  # (preset or YAML, key=value overrides) → validated config
    check: Callable[[Any, Report], None]


# --- shared pieces -----------------------------------------------------------------------------------------------


def _landmarker(report: Report, face):
    """The job's face back end (None when it cannot be built here: the failure is a finding, or its weights are
    remote and not fetched)."""
    from dva.face.landmarker import build_landmarker

    return check_loads(report, f"face.{face.backend}", lambda: build_landmarker(face, "face."))


def _inputs(report: Report, key: str, source: str) -> Optional[list]:
    """The job's videos (`discover_inputs`), or None after recording why they cannot be listed; the video files it
    skips are a warning, named as the job names them."""
    from dva.runtime.inputs import discover_inputs

    found: list = []
    skipped: list[str] = []

    def listed() -> str:
        found.extend(discover_inputs(source, skipped=skipped.append))
        return f"{len(found)} video(s) in {source}"

    ok = report.step(key, listed)
    for line in skipped:
        report.add(WARN, key, line)
    return found if ok else None


def _device(report: Report, setting: str) -> None:
    from dva.runtime.cluster import configured_device

    report.step("device", lambda: f"{setting} → {configured_device(setting)}")


def _unreadable(report: Report, bad: dict[str, str]) -> None:
    if bad:
        shown = "; ".join(f"{u}: {why}" for u, why in list(bad.items())[:SHOWN_PROBLEMS])
        more = f" (and {len(bad) - SHOWN_PROBLEMS} more)" if len(bad) > SHOWN_PROBLEMS else ""
        report.add(WARN, "input", f"{len(bad)} video(s) cannot be read and will be recorded as failed: {shown}{more}")


def _containers(report: Report, uris: Sequence[str]) -> dict[str, Container]:
    """Frames, size and bytes of each readable video; the plan names the ones that cannot be read (the job will
    record them failed)."""
    found = probe_videos(uris)
    _unreadable(report, {u: c for u, c in found.items() if isinstance(c, str)})
    return {u: c for u, c in found.items() if not isinstance(c, str)}


def _faces(report: Report, videos: Sequence[tuple[str, int, object]], landmarker, face) -> dict:
    """Each video's faces (`dva.preflight.faces.count_faces`), the ones that cannot be decoded named."""
    from dva.preflight.faces import count_faces

    found = count_faces(videos, landmarker, face.track.min_face_size)
    _unreadable(report, {u: f for u, f in found.items() if isinstance(f, str)})
    return {u: f for u, f in found.items() if not isinstance(f, str)}


def _how_counted(faces) -> str:
    from dva.preflight.faces import SAMPLED, SAMPLED_FRAMES

    by_how: dict[str, int] = {}
    for f in faces:
        by_how[f.how] = by_how.get(f.how, 0) + 1
    return "; ".join(f"{how}{f' (every k-th frame, {SAMPLED_FRAMES} per video)' if how == SAMPLED else ''}: "
                     f"{count} video(s)" for how, count in by_how.items())


def _random_weights(report: Report, cfg) -> None:
    """A job that decodes with a UNet of random weights runs (its config asked for it), with a warning."""
    from dva.runtime.config import RANDOM_WEIGHTS_WARNING

    if cfg.random_weights:
        report.add(WARN, "random_weights", RANDOM_WEIGHTS_WARNING)


def _gflop(model_cfg) -> float:
    from dva.models.unet import count_gflops

    return count_gflops(model_cfg)[1]


def _folder_of(uri: str) -> str:
    return posixpath.dirname(uri) if is_remote(uri) else os.path.dirname(os.path.abspath(uri))


# --- the edit and encode jobs ------------------------------------------------------------------------------------


def load_edit(config: str, overrides: Sequence[str]):
    from dva.pipeline.edit_job import job_config_from_arguments

    return job_config_from_arguments(config, overrides)


def load_encode(config: str, overrides: Sequence[str]):
    from dva.pipeline.edit_job import ENCODE_OVERRIDES

    return load_edit(config, [*overrides, *ENCODE_OVERRIDES])


def check_edit(cfg, report: Report) -> None:
    from dva.pipeline.edit_job import pending_tasks
    from dva.pipeline.edit_resolution import parse_job_edits
    from dva.pipeline.fingerprint import PairFingerprints

    check_files_exist(report, configured_files(cfg.model, "model") + face_files(cfg.face))
    check_model(report, cfg.model)  # stage B loads all of it, stage A all but the UNet
    _random_weights(report, cfg)
    landmarker = _landmarker(report, cfg.face)
    videos = _inputs(report, "input", cfg.input)
    writable = check_output(report, "output", cfg.output)
    check_resources(report, cfg.ray_address, [Request.of_stage("frontend", cfg.frontend),
                                              Request.of_stage("generate", cfg.generate),
                                              Request.of_task("writer", cfg.writer)])
    tasks: list[dict] = []
    skipped: list[int] = []
    key, unhashed = _latent_key_without_fetching(cfg)

    def read_done() -> str:
        fingerprints = PairFingerprints(cfg, key) if key is not None else None
        found, done = pending_tasks(cfg.output, videos or [], parse_job_edits(cfg.edits), fingerprints)
        tasks.extend(found)
        skipped.append(done)
        return f"{done} (video, edit) pair(s) already done under {cfg.output}{unhashed}"

    if videos is None or not writable or not report.step("manifest", read_done):
        return
    _check_edit_specs(report, cfg, [e for t in tasks for e in t["edits"]])
    _plan_edit(report, cfg, videos, tasks, skipped[0], key, landmarker)


def _latent_key_without_fetching(cfg):
    """The job's latent key (what an output must have been made from to count as done) and "", or, when a weight
    file cannot be read without fetching it, None and a note that finished pairs count whatever weights made them."""
    from dva.errors import DvaError
    from dva.pipeline.stages import latent_key
    from dva.storage import NotFetched, no_remote_fetch

    try:
        with no_remote_fetch():
            return latent_key(cfg), ""
    except (NotFetched, DvaError) as err:  # a missing weight file is a failed check of its own
        return None, f" (not compared with the weights: {err})"


def _check_edit_specs(report: Report, cfg, edits: Sequence[str]) -> None:
    """The files the edits still to do read: CLIP weights, the classifier, direction files, identity references."""
    from dva.editing.clip_direction import load_clip
    from dva.editing.direction import EditDirection
    from dva.editing.edits import parse_edit
    from dva.errors import StorageError
    from dva.pipeline.edit_resolution import CLIP_WEIGHTS_KEY, check_clip_weights, load_job_classifier
    from dva.storage import exists

    specs = {str(s): s for s in map(parse_edit, edits)}.values()
    kinds = {s.kind for s in specs}
    if "clip" in kinds:
        def clip() -> object:
            check_clip_weights(cfg)
            return load_clip(cfg.clip_edit.clip, cfg.clip_edit.templates, config_key="clip_edit.clip")

        check_loads(report, CLIP_WEIGHTS_KEY, clip)
    if "classifier" in kinds:
        check_loads(report, "classifier", lambda: load_job_classifier(cfg))

    def reference(uri: str) -> str:
        if not exists(uri):
            raise StorageError(f"{uri} does not exist; point the edit at an image or video of the reference face")
        return f"{uri} exists"

    for spec in specs:
        if spec.kind == "direction":
            check_loads(report, f"edits ({spec})", lambda spec=spec: EditDirection.load(spec.uri))
        elif spec.kind == "identity":
            report.step(f"edits ({spec})", lambda spec=spec: reference(spec.uri))


def _plan_edit(report: Report, cfg, videos: list, tasks: list[dict], skipped: int, key, landmarker) -> None:
    """`key`: the job's latent key, None when the weights could not be hashed (stored latents then count as none)."""
    from dva.latents import LatentStore, tracks_bytes, x_T_bytes
    from dva.pipeline.edit_resolution import has_clip_edits
    from dva.preflight import cpu_rates
    from dva.preflight.faces import stored_faces

    containers = _containers(report, [t["uri"] for t in tasks])
    readable = [t for t in tasks if t["uri"] in containers]

    def stored(task: dict) -> tuple[object, list[bool]]:
        """The video's stored faces and which of them have x_T, where the job will reuse them."""
        faces = stored_faces(cfg.output, task["video_id"], key, task["source"]) if cfg.reuse_latents else None
        if faces is None:
            return None, []
        store = LatentStore(cfg.output, task["video_id"])
        return faces, [store.has_x_T(k, key, task["source"]) for k in range(len(faces.faces))]

    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        known = dict(zip([t["uri"] for t in readable], pool.map(stored, readable)))
    counted = _faces(report, [(t["uri"], containers[t["uri"]].frames, known[t["uri"]][0]) for t in readable],
                     landmarker, cfg.face)
    n, size, chunk = cfg.steps, cfg.face.align.crop_size, cfg.chunk_frames
    dims = (cfg.model.identity_encoder.dim, cfg.model.landmark_encoder.dim)
    work, tracks, x_T, outputs, frontend_s, writer_s = EditWork(), 0, 0, 0, 0.0, 0.0
    for t in (t for t in readable if t["uri"] in counted):
        faces, container = counted[t["uri"]], containers[t["uri"]]
        reused, has_x_T = known[t["uri"]]
        video = EditWork()
        video.add(faces, t["edits"], has_x_T)
        work.merge(video)
        if reused is None:
            tracks += tracks_bytes(t["uri"], faces.frames, faces.faces, dims)
        if cfg.store_latents:
            x_T += sum(x_T_bytes(f, size, chunk) for f in video.x_T_faces)
        outputs += container.bytes * len(t["edits"])
        spent = frontend_cpu_s(cfg.face_preset, container.size, faces.frames,
                               sum(faces.faces) if reused is None else video.inverted, find_tracks=reused is None)
        frontend_s = None if spent is None or frontend_s is None else frontend_s + spent
        writer_s += sum(cpu_rates.writer_cpu_s(faces.frames, container.size, p, cfg.model.face_parser is not None)
                        for p in video.pasted)
    inversion = cfg.inversion.inversion_calls(n)
    calls = {"inversion": work.inverted * inversion, "generation": work.decoded * n}
    pairs = sum(max(1, len(t["edits"])) for t in tasks)
    report.note("videos", f"{len(videos)} ({len(tasks)} with work to do)")
    report.note("(video, edit) pairs", f"{pairs} to do, {skipped} already done (skipped)")
    report.note("frames", f"{sum(c.frames for c in containers.values()):,} in the videos to do (container headers)")
    report.note("face frames", f"{work.face_frames:,} of the faces the edits address (a frame with two faces counts "
                               f"twice), {work.inverted:,} of them to invert (the others have x_T stored for this "
                               f"model and N={n}); counted by {_how_counted(counted.values())}")
    report.note("UNet calls", f"{sum(calls.values()):,}: inversion ({cfg.inversion.label}, {inversion} per face "
                              f"frame) {calls['inversion']:,}, generation (N = {n} per face frame and edit) "
                              f"{calls['generation']:,}")
    latents = f"latents {tracks + x_T:,} bytes ({describe_bytes(tracks)} tracks and codes" + (
        f", {describe_bytes(x_T)} x_T: float32 3×{size}×{size} per face frame, in chunks of {chunk})"
        if cfg.store_latents else "; store_latents is off: no x_T)")
    crops = describe_bytes(work.decoded * 3 * size * size)
    report.note("bytes written", f"{latents}; output videos ≈ {describe_bytes(outputs)} (an estimate: each edit "
                                 f"about its input's size); temporary edited crops {crops} (deleted as each pair "
                                 "finishes)")
    frontend = ("not measured for face preset " + repr(cfg.face_preset) if frontend_s is None else
                describe_cpu_hours(frontend_s, f"face preset {cfg.face_preset!r} as {cpu_rates.FRONTEND_SOURCE} "
                                               "measured it, at the nearer of 1280x720 and 1920x1080"))
    writer = describe_cpu_hours(writer_s, f"paste + encode at {cpu_rates.WRITER_FRAMES_PER_CPU_S:g} frames/s per CPU "
                                          f"at 720p, scaled by pixels, from {cpu_rates.WRITER_SOURCE}")
    report.note("estimated CPU time", f"stage A {frontend}; stage C {writer}")
    clip = sum(has_clip_edits([e]) for t in tasks for e in t["edits"])
    if clip:
        c = cfg.clip_edit
        report.note("CLIP directions", f"up to {clip} optimisation(s) of {c.iterations} iterations × "
                                       f"{len(c.frames) * c.steps} UNet forward+backward passes (a direction in "
                                       "the cache is read instead)")
    report.note("estimated GPU time", describe_gpu_hours({n: sum(calls.values())}, _gflop(cfg.model),
                                                         cfg.model.name))


# --- preprocessing and training ---------------------------------------------------------------------------------


def load_preprocess(config: str, overrides: Sequence[str]):
    from dva.train.config import load_preprocess_config

    return load_preprocess_config(config, overrides)


def check_preprocess(cfg, report: Report) -> None:
    from dva.train.preprocess import completed_videos
    from dva.train.shards import DatasetInfo, check_dataset

    check_files_exist(report, configured_files(cfg.model, "model") + face_files(cfg.face))
    check_model(report, cfg.model, with_unet=False)  # the frozen encoders and the face parser make the shards
    _landmarker(report, cfg.face)
    videos = _inputs(report, "input", cfg.input)
    writable = check_output(report, "output", cfg.output)
    check_resources(report, cfg.ray_address, [Request.of_stage("frontend", cfg.frontend)])
    done: set[str] = set()

    def read_done() -> str:
        check_dataset(cfg.output, DatasetInfo.of(cfg.model), "this preprocess config", masks=True)
        done.update(completed_videos(cfg.output))
        return f"{len(done)} video(s) already preprocessed under {cfg.output}, with these encoders"

    if videos is None or not writable or not report.step("manifest", read_done):
        return
    todo = [v.uri for v in videos if v.video_id not in done]
    containers = _containers(report, todo)
    report.note("videos", f"{len(videos)}: {len(todo)} to do, {len(videos) - len(todo)} already done (skipped)")
    report.note("frames", f"{sum(c.frames for c in containers.values()):,} in the videos to do (container "
                          "headers); no UNet work")


def load_train(config: str, overrides: Sequence[str]):
    from dva.train.config import load_train_config

    return load_train_config(config, overrides)


def check_train(cfg, report: Report) -> None:
    from dva.storage import join
    from dva.train.shards import DatasetInfo, check_dataset, list_shards

    check_files_exist(report, configured_files(cfg.model, "model"))
    check_model(report, cfg.model)  # every worker builds the whole model (the encoders too)

    def shards() -> str:
        found = list_shards(cfg.data.path)
        check_dataset(cfg.data.path, DatasetInfo.of(cfg.model), f"model {cfg.model.name!r}", masks=False)
        report.note("shards", f"{len(found)} under {redact(cfg.data.path)}")
        return f"{len(found)} shard(s), made with this model's encoders"

    report.step("data.path", shards)
    check_output(report, "storage_path", join(cfg.storage_path, cfg.name))
    per_worker = dict(cfg.scaling.resources_per_worker)
    gpus = per_worker.get("GPU", 1.0 if cfg.scaling.use_gpu else 0.0)
    n = cfg.scaling.num_workers
    check_resources(report, cfg.ray_address, [Request("scaling", n, n, per_worker.get("CPU", 1.0), gpus)])
    d = cfg.data
    report.note("steps", f"{cfg.steps:,} (a run of the same name resumes from its latest checkpoint), "
                         f"a checkpoint every {cfg.checkpoint_every:,}")
    report.note("batch", f"{n} workers × {d.videos_per_step} videos × {d.frames_per_video} frames = "
                         f"{n * d.videos_per_step * d.frames_per_video} frames per step")


# --- evaluation and classifier training (single process) ---------------------------------------------------------


def load_eval(config: str, overrides: Sequence[str]):
    from dva.evaluation.config import load_eval_config

    return load_eval_config(config, overrides)


def check_eval(cfg, report: Report) -> None:
    _device(report, cfg.device)
    if cfg.mode == "edit":
        from dva.evaluation.consistency import build_identity_embedder
        from dva.runtime.manifest import read_manifest

        check_files_exist(report, configured_files(cfg.identity, "identity") + face_files(cfg.face))
        check_loads(report, "identity", lambda: build_identity_embedder(cfg.identity, torch.device("cpu")))
        _landmarker(report, cfg.face)

        def finished() -> str:
            rows = [r for r in read_manifest(cfg.input).to_pylist() if r["status"] == "ok" and r["edit"]]
            report.note("(video, edit) pairs", f"{len(rows)} finished edits to score")
            if not rows:
                from dva.errors import StorageError

                raise StorageError(f"no finished edits in the manifest under {cfg.input}; set `input` to the "
                                   "output prefix of a `dva edit` run")
            return f"{len(rows)} finished edit(s) in the manifest"

        report.step("input", finished)
        check_output(report, "output", cfg.output_prefix)
        return
    from dva.evaluation.reconstruction import LpipsScorer

    files = configured_files(cfg.model, "model") + face_files(cfg.face)
    check_files_exist(report, files + ([("lpips_weights", cfg.lpips_weights)] if cfg.lpips_weights else []))
    check_model(report, cfg.model)
    _random_weights(report, cfg)
    landmarker = _landmarker(report, cfg.face)
    if cfg.lpips_weights:
        check_loads(report, "lpips_weights", lambda: LpipsScorer(cfg.lpips_weights, torch.device("cpu")))
    else:
        report.add(WARN, "lpips_weights", "not set: LPIPS will be skipped (the reason is recorded)")
    videos = _inputs(report, "input", cfg.input)
    check_output(report, "output", cfg.output_prefix)
    if videos is None:
        return
    containers = _containers(report, [v.uri for v in videos])
    counted = _faces(report, [(uri, c.frames, None) for uri, c in containers.items()], landmarker, cfg.face)
    # one track per video, the largest face first (`evaluate_video`), over its own frames
    largest = [f.faces[f.largest] if f.faces else 0 for f in counted.values()]
    used = sum(min(f, cfg.max_frames) if cfg.max_frames else f for f in largest)
    decodes = 2 if cfg.identity_target else 1  # the reconstruction, and the identity edit from the same x_T
    calls = {(m.label, n): used * (m.inversion_calls(n) + decodes * n)
             for m in cfg.inversions for n in sorted(set(cfg.steps))}  # as `run_reconstruction` runs them
    by_steps: dict[int, int] = {}
    for (_, n), count in calls.items():
        by_steps[n] = by_steps.get(n, 0) + count
    report.note("videos", f"{len(videos)}, {used:,} face frames evaluated (each video's largest face over its own "
                          f"frames{f', at most {cfg.max_frames}' if cfg.max_frames else ''}; counted by "
                          f"{_how_counted(counted.values())})")
    report.note("UNet calls", f"{sum(calls.values()):,}: " + ", ".join(
        f"{label} N={n} {count:,}" for (label, n), count in calls.items()) + " (inversion + "
        + ("the reconstruction and the identity edit, N each" if cfg.identity_target else "one decode of N")
        + " per face frame)")
    report.note("estimated GPU time", describe_gpu_hours(by_steps, _gflop(cfg.model), cfg.model.name))


def load_train_classifier(config: str, overrides: Sequence[str]):
    from dva.train.classifier_job import load_train_classifier_config

    return load_train_classifier_config(config, overrides)


def check_train_classifier(cfg, report: Report) -> None:
    from dva.editing.classifier import parse_celeba_attributes, select_attributes
    from dva.pipeline.edit_resolution import IMAGE_SUFFIXES

    _device(report, cfg.device)
    face = [] if cfg.aligned else face_files(cfg.face)  # aligned crops need no front end
    check_files_exist(report, configured_files(cfg.model, "model") + face)
    check_model(report, cfg.model)
    if not cfg.aligned:
        _landmarker(report, cfg.face)
    names: list[str] = []

    def annotations() -> str:
        table = parse_celeba_attributes(cfg.annotations)
        if cfg.attributes:
            table = select_attributes(table, cfg.attributes)
        names.extend(table.filenames[:cfg.limit or None])
        return f"{len(table.filenames)} annotated image(s), {len(table.names)} attribute(s)"

    def images() -> str:
        root = str(cfg.images).rstrip("/")
        listed = {u[len(root) + 1:] for u in list_files(root, IMAGE_SUFFIXES)}
        if not listed:
            from dva.errors import StorageError

            raise StorageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}; set `images` to the folder "
                               "of the annotated images")
        present = sum(n in listed for n in names)
        report.note("images", f"{present:,} of the {len(names):,} annotated images are under `images` "
                              "(the others are skipped)")
        return f"{len(listed)} image(s) under {root}"

    if report.step("annotations", annotations):
        report.step("images", images)
    check_output(report, "output", _folder_of(cfg.output))


JOBS: dict[str, Job] = {
    "edit": Job("edit", "local_tiny", load_edit, check_edit),
    "encode": Job("edit", "local_tiny", load_encode, check_edit),
    "preprocess": Job("preprocess", "local_tiny", load_preprocess, check_preprocess),
    "train": Job("train", "tiny_cpu", load_train, check_train),
    "eval": Job("eval", "local_tiny", load_eval, check_eval),
    "train-classifier": Job("train_classifier", "local_tiny", load_train_classifier, check_train_classifier),
}
