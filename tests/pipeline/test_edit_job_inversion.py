"""The edit job with `inversion.method=fixed_point` (issue 18) on a local Ray cluster: it runs, costs N·K + N UNet
calls per frame, and a later `ddim` run on the same output prefix inverts again instead of reusing its latents."""

from __future__ import annotations

import numpy as np
import pytest

from edit_job_args import job_overrides
from dva.latents import LatentStore
from dva.pipeline.config import EditJobConfig
from dva.pipeline.edit_job import run_edit_job
from dva.pipeline.stages import latent_key
from dva.runtime.config import load_job_config
from dva.runtime.manifest import read_manifest
from dva.samples import make_sample_clip
from dva.storage import file_stamp


@pytest.mark.slow  # ≈ 1–3 min on a shared CPU: two job passes
def test_fixed_point_job_runs_and_ddim_does_not_reuse_its_latents(ray_local, tiny_checkpoint, tmp_path):
    clip = make_sample_clip(tmp_path / "astronaut.mp4", "astronaut", frames=4)
    out = str(tmp_path / "out")

    def run(*extra):
        cfg = load_job_config(EditJobConfig, "local_tiny", job_overrides(clip, out, tiny_checkpoint, *extra))
        return cfg, run_edit_job(cfg)

    fixed_cfg, fixed = run("inversion.method=fixed_point", "inversion.iterations=2", "edits=[reconstruct]")
    assert (fixed.ok, fixed.failed) == (1, 0), fixed
    assert fixed.unet_calls == (2 * fixed_cfg.steps + fixed_cfg.steps) * fixed.frames  # N·K to invert, N to decode
    video_id = read_manifest(out).to_pylist()[0]["video_id"]
    store = LatentStore(out, video_id)
    assert store.is_complete(latent_key(fixed_cfg), file_stamp(clip))
    fixed_x_T = store.load_x_T(0, 0)

    ddim_cfg, ddim = run("edits=[reconstruct]")
    assert latent_key(ddim_cfg) != latent_key(fixed_cfg)
    # not skipped and not decoded from the fixed-point x_T: inverted again, 2N−1 calls per frame
    assert (ddim.ok, ddim.skipped) == (1, 0) and ddim.unet_calls == (2 * ddim_cfg.steps - 1) * ddim.frames, ddim
    assert store.is_complete(latent_key(ddim_cfg), file_stamp(clip))
    assert not np.array_equal(store.load_x_T(0, 0), fixed_x_T)
