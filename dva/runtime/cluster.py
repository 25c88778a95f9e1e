"""What dva's jobs share: connecting to (or starting) Ray, actor pools, and the device and threads of an actor or
of a single-process job.

The edit, encode and preprocessing jobs, the training driver, `dva eval` and `dva train-classifier` use these; Ray
is imported only when a job starts.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable, Optional

import torch

from dva import threads
from dva.errors import DvaError


def init_ray(address: Optional[str] = None, progress: bool = True):
    """Connect to `address` (or RAY_ADDRESS) when set, else start a local Ray; a no-op when already connected."""
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # A local Ray turns token authentication on (its default since 2.5x) and says so on every start: nothing for
    # the user to do, so that notice is not shown; a choice made with RAY_AUTH_MODE is Ray's, and silent anyway.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    _spend_actor_restart_notice(ray)
    return ray


class _Idle:
    def __init__(self, _held) -> None:
        pass


def _spend_actor_restart_notice(ray) -> None:
    """Ray's core worker prints, once per process, an error line when an actor that may restart takes an argument
    held in the object store (ray-project/ray#53727). Ray Data starts every stage actor so, with arguments it keeps
    alive itself (ray-project/ray#57733): the line names no problem of the job, and its only switch
    (RAY_BACKEND_LOG_LEVEL) silences every C++ log line and prints one of its own per process. So it is spent here,
    on an idle actor made with the process's native stderr closed for that one call."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        ray.remote(num_cpus=0, max_restarts=1)(_Idle).remote(ray.put(None))  # its handle dropped: Ray ends it
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def actor_pool(stage):
    """Ray Data's actor-pool strategy for a `StageConfig`: fixed size, or autoscaling from `min_actors`."""
    from ray.data import ActorPoolStrategy

    if stage.min_actors is None:
        return ActorPoolStrategy(size=stage.actors)
    return ActorPoolStrategy(min_size=stage.min_actors, max_size=stage.actors)


def configured_device(setting: str) -> torch.device:
    """The device a single-process job's `device` key means: `auto` (a GPU when torch sees one), `cpu` or `cuda`."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise DvaError("config key `device`: cuda was asked for but torch sees no GPU; use device=auto or cpu")
    return torch.device(setting)


def stage_device(num_gpus: float) -> torch.device:
    return torch.device("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")


def on_device(encode: Callable[[torch.Tensor], torch.Tensor], device: torch.device
              ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`encode` fed on `device`: crops are made on the CPU, the model may sit on a GPU."""
    return lambda images: encode(images.to(device))


def limit_threads(num_cpus: float) -> None:
    """Use the cores the actor reserved, not every core of the node (several actors share a machine): every
    library the actor runs (torch, ONNX Runtime, OpenCV, the video decoder, Inductor) gets `num_cpus` threads
    (`dva.threads`). Call it before building models, as ONNX Runtime sizes a session when it is made.

    Call it in each `__call__` too: Ray may run calls on another thread than `__init__`, and OpenMP's thread count
    is per calling thread. A fixed count also keeps reductions, hence pixels, identical from run to run.
    """
    threads.limit(num_cpus)


def failure_reason(err: BaseException) -> str:
    """What a job records for a video that failed: a project error's own message; anything else (a bug, an
    unexpected input) with its type and the last places it passed, so it can be found."""
    if isinstance(err, DvaError):
        return str(err)
    if isinstance(err, torch.OutOfMemoryError):
        return f"out of memory ({str(err).splitlines()[0]}); lower generate.batch_frames or give the stage more memory"
    where = "".join(traceback.format_exception(err, limit=-2)).strip().splitlines()[-3:]
    return f"{type(err).__name__}: {err} ({' | '.join(where)})"
