"""Where the official reference test vectors are, for every `test_reference_*` module (a module of its own so that
they import one definition): `DVA_TESTVECTORS` when set, else `shared/testvectors/official` inside or beside the
repository. The `official_vectors` fixture (tests/unit/conftest.py) skips a test when they are missing, and fails
it in CI (`CI=true`), where a missing set would otherwise pass as a row of skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = (_REPO / "shared/testvectors/official", _REPO.parent / "shared/testvectors/official")
VECTORS = Path(os.environ.get("DVA_TESTVECTORS") or next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[-1]))

# reference256 with the UNet of the official small vectors (unet_small/config.json); E_id is not under test here.
SMALL = ["name=reference_small", "unet.image_size=32", "unet.model_channels=32", "unet.channel_mult=[1,2,2]",
         "unet.num_res_blocks=1", "unet.dropout=0.0", "identity_encoder.kind=random"]


def require_vectors() -> Path:
    """The vectors' folder; a skip when it is missing, a failure when it is missing in CI."""
    if VECTORS.is_dir():
        return VECTORS
    message = f"official test vectors not found at {VECTORS} (set DVA_TESTVECTORS to their `official` folder)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true runs them, so their absence is an error", pytrace=False)
    pytest.skip(message)
