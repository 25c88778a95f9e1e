"""Evaluation of models and edit runs (SPEC §4), as a library the `dva eval` job (`job.py`) runs.

- `reconstruction`: videos → face crops → invert (per method) + DDIM generate at several N → SSIM, MS-SSIM, MSE,
  PSNR, LPIPS, relative x0 error, UNet calls, seconds; optionally an identity edit's strength and TL-ID / TG-ID.
- `consistency`: an edit job's outputs → TL-ID, TG-ID and face-region flicker per (video, edit).

Results are written to `<output>/eval/<mode>/` by `dva.runtime.eval_results` (which `dva report` reads too) and
shown next to the published numbers in `dva.metrics.paper`.
"""

from dva.evaluation.config import EvalConfig, load_eval_config
from dva.evaluation.consistency import build_identity_embedder, evaluate_edit_outputs, evaluate_pair
from dva.evaluation.reconstruction import evaluate_video

__all__ = [
    "EvalConfig", "build_identity_embedder", "evaluate_edit_outputs", "evaluate_pair", "evaluate_video",
    "load_eval_config",
]
