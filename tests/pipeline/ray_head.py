"""A separately started Ray head on loopback (`ray start --head --block`) and `ray job submit` to it, as the README's
cluster section does it, for the tests that rehearse a cluster on one machine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

from s3 import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the venv's python and its `ray` command
EXCLUDES = [".venv", ".git", "out"]


@contextlib.contextmanager
def ray_head(args: Sequence[str] = (), env: dict | None = None, port: int | None = None
             ) -> Iterator[tuple[str, str, Path]]:
    """`ray start --head --block` on loopback with ports of its own (GCS on `port` when given), plus `args` and
    `env`; yields the dashboard URL, the GCS address and the session's temp dir.

    Torn down by signalling that process (it stops the processes it started) rather than `ray stop`, which would
    stop every Ray process on the machine, other test sessions' included.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="rayjs-", dir="/tmp"))  # short: socket paths must fit 107 bytes
    dashboard, port = free_port(), port or free_port()
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", f"--port={port}", f"--dashboard-port={dashboard}",
           "--disable-usage-stats", f"--temp-dir={temp_dir}", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
           f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}", *args]
    # The cluster sees no AWS_* variables: the job's runtime env must bring them, as on a real cluster. `python` in
    # the entrypoint is the venv's (workers run on this machine, with its interpreter).
    head_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    head_env.update(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", PATH=f"{VENV_BIN}{os.pathsep}{head_env.get('PATH', '')}",
                    **(env or {}))
    log_path = temp_dir / "ray-start.log"
    with open(log_path, "wb") as log:
        head = subprocess.Popen(cmd, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            assert head.poll() is None, f"ray start exited:\n{log_path.read_text()[-3000:]}"
            assert time.time() < deadline, f"no dashboard at {url}:\n{log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield url, f"127.0.0.1:{port}", temp_dir
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:  # anything of that session still alive (workers mid-exit): its process group is ours
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(url: str, runtime_env: dict, *entrypoint: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`ray job submit` with the repo as working_dir; waits for the job and tails its logs, as the CLI does."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def job_env(tmp: Path) -> dict:
    """The runtime env of a job: the S3 server's endpoint and (dummy) credentials, a weights cache, excludes."""
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    assert "AWS_ENDPOINT_URL" in aws
    return {"excludes": EXCLUDES,
            "env_vars": {**aws, "DVA_CACHE_DIR": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}}
