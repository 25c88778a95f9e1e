"""The checks every job shares. Each records findings in a `Report` and never raises, so one run lists every
problem. Weight files are loaded by the jobs' own loaders inside `no_remote_fetch()`: a local file is loaded
exactly as a job would load it; a remote one is checked to exist and left where it is, except a dva checkpoint,
whose header is read by ranged reads and judged as a local one is (`dva.runtime.weights.checkpoint_header`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from dva.errors import DvaError, MissingWeightsError
from dva.models.config import ModelConfig
from dva.preflight.report import FAIL, OK, WARN, Report, describe_error, megabytes
from dva.storage import (NotFetched, exists, is_remote, join, no_remote_fetch, redact, remove_prefix, size,
                         write_bytes_atomic)

# Leaf names of config keys that name a weight file (or a folder of them).
FILE_KEYS = ("weights", "detector_weights", "landmark_weights", "predictor", "checkpoint", "lpips_weights")


def configured_files(node, prefix: str) -> list[tuple[str, str]]:
    """(config key, location) of every weight file set under the config dataclass `node`."""
    found = []
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            found += configured_files(value, key)
        elif f.name in FILE_KEYS and isinstance(value, str) and value:
            found.append((key, value))
    return found


def face_files(face) -> list[tuple[str, str]]:
    """The weight files of the face back end in use (the other back ends' keys are not read by the job)."""
    return configured_files(getattr(face, face.backend), f"face.{face.backend}")


def check_files_exist(report: Report, files: Sequence[tuple[str, str]]) -> None:
    """Every configured file exists (local path or object): all of them, before any loader stops at the first."""
    for key, uri in files:
        if not report.step(key, lambda uri=uri, key=key: _exists(uri, key)):
            report.missing_keys.add(key)


def _exists(uri: str, key: str) -> str:
    if not exists(uri):
        raise MissingWeightsError(uri, key)
    return f"{uri} exists" + ("" if Path(uri).is_dir() else f" ({megabytes(size(uri))})")


def check_loads(report: Report, key: str, build: Callable[[], object]) -> Optional[object]:
    """Run a job's loader for `key` without downloading anything; ok names what it built. Returns what it built
    (None when it failed, or when a remote file was left unfetched)."""
    built: list[object] = []

    def run() -> str:
        try:
            with no_remote_fetch():
                built.append(build())
        except (DvaError, NotFetched):
            raise
        except Exception as err:  # e.g. a preset naming a module that is not there: a finding, not a traceback
            raise DvaError(f"cannot be built: {describe_error(err)}") from None
        return f"loaded ({type(built[0]).__name__})"

    if not report.is_missing(key):
        report.step(key, run)
    return built[0] if built else None


# --- the model ----------------------------------------------------------------------------------------------------


def check_model(report: Report, cfg: ModelConfig, prefix: str = "model", with_unet: bool = True) -> None:
    """The checkpoint fits the model config (keys, shapes, format: from its header, see `checkpoint_fits`), and
    each frozen network it does not hold loads from its own weight file through the encoder registry."""
    from dva.models.autoencoder import build_face_parser
    from dva.models.encoders import build_encoder
    from dva.runtime.weights import resolve_encoder

    held: set[str] = set()
    key = f"{prefix}.checkpoint"
    if cfg.checkpoint and not report.is_missing(key):
        report.step(key, lambda: checkpoint_fits(cfg, key, with_unet, held))
    for role, kind in (("identity_encoder", "identity"), ("landmark_encoder", "landmark")):
        if role not in held:
            role_key = f"{prefix}.{role}"
            check_loads(report, role_key, lambda role=role, kind=kind, role_key=role_key: build_encoder(
                resolve_encoder(getattr(cfg, role), role_key), role_key, kind))
    if cfg.face_parser is not None and "face_parser" not in held:
        parser_key = f"{prefix}.face_parser"
        check_loads(report, parser_key,
                    lambda: build_face_parser(resolve_encoder(cfg.face_parser, parser_key), parser_key))


def checkpoint_fits(cfg: ModelConfig, key: str, with_unet: bool, held: set[str]) -> str:
    """What `load_model` checks of a checkpoint, without reading its tensors (`checkpoint_fit`: a dva checkpoint's
    header, a reference `.ckpt` memory-mapped); adds to `held` the frozen networks the file holds."""
    from dva.runtime.weights import checkpoint_fit

    fit = checkpoint_fit(cfg, key, with_unet)
    held.update(fit.held)
    how = ("reference checkpoint read memory-mapped" if fit.data_bytes is None
           else f"header read ({'two ranged reads' if is_remote(str(cfg.checkpoint)) else 'locally'}), "
                f"{megabytes(fit.data_bytes)} of tensors not loaded")
    holds = f"; holds the {', '.join(sorted(fit.held))} weights" if fit.held else ""
    return f"{cfg.checkpoint}: {how}; its {fit.tensors} trained tensors fit model {cfg.name!r}{holds}"


# --- inputs and outputs ------------------------------------------------------------------------------------------


def check_output(report: Report, key: str, prefix: str) -> bool:
    """A probe object is written under `prefix` the way jobs write (`atomic_output`), then deleted."""
    return report.step(key, lambda: _probe_write(prefix))


def _probe_write(prefix: str) -> str:
    probe = join(prefix, f".dva-check-{uuid.uuid4().hex[:12]}")
    created = [] if is_remote(prefix) else _absent_folders(Path(prefix.removeprefix("file://")).expanduser())
    try:
        write_bytes_atomic(probe, b"written by `dva check`; safe to delete\n")
        remove_prefix(probe)
    except DvaError:
        with contextlib.suppress(OSError, DvaError):
            remove_prefix(probe)
        raise
    finally:
        for folder in created:  # leave no folder behind that the check made (only empty ones go)
            with contextlib.suppress(OSError, DvaError):
                folder.rmdir()
    return f"{prefix} is writable (a probe object was written and deleted)"


def _absent_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    absent = []
    while not folder.exists() and folder.parent != folder:
        absent.append(folder)
        folder = folder.parent
    return absent


# --- resources ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """`least`..`most` Ray actors (or workers, or tasks) of one stage, each holding `cpus` CPUs, `gpus` GPUs and the
    custom resources `resources` ((name, amount) pairs, e.g. a GPU pod's `unet_slot`)."""

    key: str  # the config key that sets it, e.g. `generate`
    least: int
    most: int
    cpus: float
    gpus: float
    resources: tuple[tuple[str, float], ...] = ()

    @staticmethod
    def of_stage(key: str, stage) -> Request:
        """From a `StageConfig`: an autoscaling pool needs `min_actors` to start, `actors` at full size."""
        least = stage.actors if stage.min_actors is None else stage.min_actors
        return Request(key, least, stage.actors, stage.num_cpus, stage.num_gpus,
                       tuple(sorted(stage.resources.items())))

    @staticmethod
    def of_task(key: str, task) -> Request:
        """From a `TaskConfig`: one task at a time at least and at most."""
        return Request(key, 1, 1, task.num_cpus, task.num_gpus, tuple(sorted(task.resources.items())))

    def amounts(self) -> dict[str, float]:
        """What one actor holds, by Ray resource name."""
        return {"CPU": self.cpus, "GPU": self.gpus, **dict(self.resources)}


def _totals(requests: Sequence[Request], count: Callable[[Request], int]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for r in requests:
        for name, amount in r.amounts().items():
            totals[name] = totals.get(name, 0.0) + count(r) * amount
    return totals


def _amounts(amounts: dict[str, float]) -> str:
    return ", ".join(f"{amount:g} {name}" for name, amount in amounts.items())


def _describe(requests: Sequence[Request]) -> str:
    return "; ".join(f"{r.key}: {r.least}{'' if r.least == r.most else f'-{r.most}'} × ({_amounts(r.amounts())})"
                     for r in requests)


def check_resources(report: Report, address: Optional[str], requests: Sequence[Request]) -> None:
    """The stages' actors against what Ray would give them, without starting any work.

    No address (config `ray_address` or RAY_ADDRESS): the job starts Ray on this machine, whose CPUs and GPUs are
    fixed and which offers no custom resources, so a job that cannot place its smallest pools would wait forever:
    FAIL. A reachable cluster: compared with `ray.cluster_resources()` now, as a warning, because an autoscaling
    cluster (KubeRay, the launcher) adds nodes on demand. An unreachable one: not checked, said so.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    asked = _describe(requests)
    if not address:
        have = {"CPU": float(len(os.sched_getaffinity(0))), "GPU": float(torch.cuda.device_count())}
        _compare(report, requests, have, "this machine (a local Ray, as the job would start)", fixed=True)
        return
    resources = _cluster_resources(address)
    if isinstance(resources, str):
        report.add(WARN, "resources", f"not checked: {resources}. Requested: {asked}")
        return
    _compare(report, requests, resources, f"the cluster at {redact(address)} now", fixed=False)


def _compare(report: Report, requests: Sequence[Request], have: dict, where: str, fixed: bool) -> None:
    least, most = _totals(requests, lambda r: r.least), _totals(requests, lambda r: r.most)
    offered = {name: have.get(name, 0.0) for name in most}
    summary = (f"{where}: {_amounts(offered)}; the job needs {_amounts(least)} to start and {_amounts(most)} at "
               f"full size ({_describe(requests)})")
    if any(amount > offered[name] for name, amount in least.items()):
        custom = sorted(name for name, amount in least.items()
                        if name not in ("CPU", "GPU") and amount > offered[name])
        if fixed:
            hint = (f"; a local Ray offers no custom resources ({', '.join(custom)}): start Ray with them "
                    "(`ray start --head --resources=...`) and set `ray_address`, or clear the stages' `resources`"
                    if custom else "; lower the stages' `actors`/`min_actors`, `num_cpus`, `num_gpus`, or set "
                                   "`ray_address` to a cluster")
            report.add(FAIL, "resources", summary + hint)
        else:
            report.add(WARN, "resources", f"{summary}; fine only if the cluster autoscales to it")
    elif any(amount > offered[name] for name, amount in most.items()):
        report.add(WARN, "resources", f"{summary}; the pools will not all reach full size"
                                      + ("" if fixed else " unless the cluster grows"))
    else:
        report.add(OK, "resources", summary)


def _cluster_resources(address: str) -> dict | str:
    """`ray.cluster_resources()` of the cluster at `address` (connected as a driver, nothing scheduled, then
    disconnected), or why it could not be read."""
    if address.startswith(("http://", "https://")):
        return (f"{redact(address)} is a dashboard / job-submission address; run the check as the job's "
                "entrypoint (`--dry-run` in `ray job submit`) or with the cluster's GCS address")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as err:
            return f"Ray at {redact(address)} is not reachable from here ({err})"
    import ray

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except Exception as err:  # ConnectionError, version mismatch, auth: not checked, and why
        return f"cannot connect to Ray at {redact(address)} ({type(err).__name__}: {redact(err)})"
    try:
        return dict(ray.cluster_resources())
    finally:
        ray.shutdown()
