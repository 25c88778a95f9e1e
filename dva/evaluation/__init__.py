"""Evaluation of models and edit runs (SPEC §4), as a library: the `dva eval` job and `dva report` call it.

- `reconstruction`: videos → face crops → invert (per method) + DDIM generate at several N → SSIM, MS-SSIM, MSE,
  PSNR, LPIPS, relative x0 error, UNet calls, seconds; optionally an identity edit's strength and TL-ID / TG-ID.
- `consistency`: an edit job's outputs → TL-ID, TG-ID and face-region flicker per (video, edit).
- `results`: the `<output>/eval/<mode>/` folder (Parquet tables + summary.json); `paper`: the published numbers.
"""

from dva.evaluation.config import EvalConfig, load_eval_config
from dva.evaluation.consistency import build_identity_embedder, evaluate_edit_outputs, evaluate_pair
from dva.evaluation.reconstruction import evaluate_video
from dva.evaluation.results import eval_prefix, read_summary, read_table

__all__ = [
    "EvalConfig", "build_identity_embedder", "eval_prefix", "evaluate_edit_outputs", "evaluate_pair",
    "evaluate_video", "load_eval_config", "read_summary", "read_table",
]
