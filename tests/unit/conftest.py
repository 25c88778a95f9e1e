import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from dva.config import load_config  # noqa: E402
from dva.models.autoencoder import DiffusionVideoAutoencoder  # noqa: E402
from dva.models.config import ModelConfig  # noqa: E402
from dva.models.unet import UNet  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_thread_budget(monkeypatch):
    """Stage constructors give every library their actor's CPUs (`dva.threads.limit`); give the next test the
    process's own counts back (Inductor's compile workers aside: they change no result)."""
    import cv2

    from dva import threads

    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    environment = {name: os.environ.get(name) for name in threads.ENV_VARS}
    monkeypatch.setattr(threads, "_budget", threads.budget())
    yield
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(cv2_threads)
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def tiny_config() -> ModelConfig:
    return load_config(ModelConfig, "tiny", group="model")


@pytest.fixture
def tiny_model(tiny_config) -> DiffusionVideoAutoencoder:
    torch.manual_seed(0)
    return DiffusionVideoAutoencoder(tiny_config).eval()


@pytest.fixture
def random_tiny_unet(tiny_config) -> UNet:
    """The tiny UNet with every weight drawn at random, zero-initialised layers included, so all paths matter."""
    torch.manual_seed(0)
    unet = UNet(tiny_config.unet).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(torch.randn_like(p) / max(1, p[0].numel()) ** 0.5)
    return unet


@pytest.fixture(scope="session")
def official_vectors():
    """The official reference test vectors' folder: skips without them, fails without them in CI (`CI=true`)."""
    from reference_vectors import require_vectors

    return require_vectors()


@pytest.fixture
def interpreted_triton():
    """Triton kernels interpreted on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 before triton loads)."""
    triton = pytest.importorskip("triton")
    if not triton.knobs.runtime.interpret:
        pytest.skip("TRITON_INTERPRET=1 was overridden: the fused kernels cannot run on CPU tensors")
