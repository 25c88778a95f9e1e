"""Evaluation metrics (SPEC §4): per-image reconstruction quality and temporal consistency of edited videos.

Pure functions over tensors; Ray stages and jobs call them unchanged. `paper` holds the published numbers that
`dva eval` and `dva report` show ours next to.
"""

from dva.metrics.image import (
    lpips_distance,
    mean_scores,
    ms_ssim,
    mse,
    psnr,
    reconstruction_scores,
    ssim,
)
from dva.metrics.temporal import (
    IdentityConsistency,
    embed_frames,
    flicker,
    identity_consistency,
    video_identity_consistency,
)

__all__ = [
    "IdentityConsistency",
    "embed_frames",
    "flicker",
    "identity_consistency",
    "lpips_distance",
    "mean_scores",
    "ms_ssim",
    "mse",
    "psnr",
    "reconstruction_scores",
    "ssim",
    "video_identity_consistency",
]
