"""The thread budget of this process: how many threads each native library may keep busy at once.

A Ray actor reserves `num_cpus` CPUs of a node that other actors share, but each library sizes its own pool by the
node: torch and OpenCV a thread per core, ONNX Runtime a thread per physical core, FFmpeg's frame-threaded decoders
a thread per core up to 16, Inductor a compile worker per core. `limit(cpus)` (called by
`dva.runtime.cluster.limit_threads` in every actor and Ray task) is the one place that decides: it sets the
process-wide counts at once (torch intra- and inter-op threads, Inductor's `compile_threads`, OpenCV, and the
OpenMP / BLAS environment variables that libraries loaded later and child processes read) and records the budget,
which the library reads where it builds things one at a time: ONNX Runtime sessions (`onnx_session_options`) and
video decoders (`decoder_threads`). Without a budget (a command that has the machine to itself) every library keeps
its own default. The video encoder runs one thread in any case (`dva.video.encode`).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

# Read by libraries that start after this (at import or start-up), and by child processes (Inductor's compile
# workers). Inductor reads TORCHINDUCTOR_COMPILE_THREADS when imported; an Inductor already loaded is set directly.
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS")

_budget: Optional[int] = None


def limit(cpus: float) -> None:
    """Give every library `cpus` threads (at least one; a fraction of a CPU is one thread). Cheap to call again:
    torch's intra-op count is per calling thread under OpenMP, so a Ray actor calls this in each method too."""
    global _budget
    import torch

    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    if threads == _budget:
        return
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass  # torch sizes its inter-op pool once per process (a Ray worker reused by a task of another size)
    import cv2

    cv2.setNumThreads(threads)
    for name in ENV_VARS:
        os.environ[name] = str(threads)
    inductor_config = sys.modules.get("torch._inductor.config")  # importing it costs seconds: only when in use
    if inductor_config is not None:
        inductor_config.compile_threads = threads
    _budget = threads


def budget() -> Optional[int]:
    """The threads this process may use, or None when no budget was set (each library picks its own count)."""
    return _budget


def onnx_session_options():
    """`onnxruntime.SessionOptions` holding ONNX Runtime's intra-op pool to the budget (the caller's thread counts
    as one of them); None without a budget, which leaves ONNX Runtime's default of one thread per physical core."""
    if _budget is None:
        return None
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _budget
    options.inter_op_num_threads = 1  # used only by the parallel executor, which no session here asks for
    return options


def decoder_threads() -> int:
    """Threads of one video decoder: the budget, or 0 (FFmpeg's own choice: one per core, at most 16)."""
    return _budget or 0
