"""The published numbers our results are shown next to (Kim et al., CVPR 2023; SPEC §4, to be re-checked against
the PDF). Reconstruction is on 256² aligned crops; temporal consistency is TL-ID / TG-ID averaged over edits."""

from __future__ import annotations

# (method, DDIM steps or None) → metric → value
RECONSTRUCTION = {
    ("DVA", 100): {"ssim": 0.922, "ms_ssim": 0.989, "lpips": 0.045, "mse": 0.002},
    ("DVA", 20): {"ssim": 0.540, "ms_ssim": 0.905, "lpips": 0.228, "mse": 0.016},
    ("PTI", None): {"ssim": 0.765, "ms_ssim": 0.939, "lpips": 0.063, "mse": 0.007},
}
RECONSTRUCTION_METRICS = ("ssim", "ms_ssim", "lpips", "mse")

TEMPORAL = {
    "DVA": {"tl_id": 0.995, "tg_id": 0.996},
    "STIT": {"tl_id": 0.997, "tg_id": 0.961},
    "Xu et al.": {"tl_id": 1.002, "tg_id": 0.983},
    "Yao et al.": {"tl_id": 0.989, "tg_id": 0.920},
}
TEMPORAL_METRICS = ("tl_id", "tg_id")


def as_json() -> dict:
    """The paper's numbers in the shape the summaries store them."""
    return {
        "reconstruction": [{"method": m, "steps": n, **v} for (m, n), v in RECONSTRUCTION.items()],
        "temporal": [{"method": m, **v} for m, v in TEMPORAL.items()],
    }
