"""A real S3 endpoint for tests: moto's HTTP server on loopback, with the AWS environment pointed at it.

Clients are not patched: s3fs, pyarrow and Ray workers reach the server over HTTP through AWS_ENDPOINT_URL, like a
MinIO or S3 endpoint in production.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import s3fs
from moto.server import ThreadedMotoServer

# Dummy credentials, long and distinctive enough that `redact` tests can look for them.
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "dva-test-access-key",
    "AWS_SECRET_ACCESS_KEY": "dva-test-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would point clients somewhere else (a developer's profile, real session tokens).
_CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ServerProcess:
    """moto's server in a process of its own (for benchmarks: its request handling then takes no time from the
    measured process's threads, as a remote S3 endpoint would not)."""

    def __init__(self, port: int):
        self.port, self._process = port, None

    def start(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto's server did not listen on port {self.port} within 30 s")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)


class MotoS3:
    """`start()` the server and set the environment; `stop()` restores both. `make_bucket()` gives `s3://name`.
    The server runs in this process's threads, or with `own_process=True` in a process of its own."""

    def __init__(self, own_process: bool = False):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = (_ServerProcess(self.port) if own_process
                        else ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False))
        self._saved: dict[str, str | None] = {}
        self._config_dir = tempfile.TemporaryDirectory(prefix="dva-aws-")

    def start(self) -> MotoS3:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
        self._server.start()
        missing = os.path.join(self._config_dir.name, "absent")  # no ~/.aws profile or endpoint leaks in
        env = {
            **TEST_ENV,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": missing,
            "AWS_SHARED_CREDENTIALS_FILE": missing,
        }
        for name in [*env, *_CLEARED]:
            self._saved[name] = os.environ.get(name)
        os.environ.update(env)
        for name in _CLEARED:
            os.environ.pop(name, None)
        s3fs.S3FileSystem.clear_instance_cache()  # a cached instance would keep an older endpoint
        return self

    def stop(self) -> None:
        self._server.stop()
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        s3fs.S3FileSystem.clear_instance_cache()
        self._config_dir.cleanup()

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem(endpoint_url=self.endpoint).mkdir(name)
        return f"s3://{name}"
