"""Shared fixtures: sample face clips (made once per session, cached by their arguments) and the dlib front end."""

from __future__ import annotations

import json
import os

# The Triton kernels (dva.models.fused_norm) run interpreted on CPU tensors. Triton fixes the mode when it is first
# imported (torch.compile imports it too), so it is set here, before any test, and inherited by subprocesses.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory):
    """`sample_clip(person, **make_sample_clip kwargs) -> path`; identical requests share one file."""
    from dva.samples import make_sample_clip

    folder = tmp_path_factory.mktemp("samples")
    made: dict[str, str] = {}

    def make(person="astronaut", **kwargs) -> str:
        key = json.dumps([person, sorted(kwargs.items())], default=str)
        if key not in made:
            made[key] = make_sample_clip(folder / f"clip{len(made)}.mp4", person, **kwargs)
        return made[key]

    return make


@pytest.fixture(scope="session")
def face_cfg():
    from dva.face import load_face_config

    return load_face_config("dlib")


@pytest.fixture(scope="session")
def dlib_landmarker(face_cfg):
    from dva.face import build_landmarker

    return build_landmarker(face_cfg)


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback for the whole session, with AWS_ENDPOINT_URL and dummy credentials set."""
    from s3 import MotoS3  # tests/s3.py: pytest puts this conftest's folder on sys.path

    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new, empty bucket for one test, as `s3://name`."""
    return s3_server.make_bucket()


@pytest.fixture(params=["local", "s3"])
def storage_root(request, tmp_path) -> str:
    """An empty folder, once as a local path and once as an s3:// prefix: for tests that both must pass."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/store"
