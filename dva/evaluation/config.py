"""Typed schema of an evaluation run (`configs/eval/*.yaml`), validated before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from dva.diffusion.inversion import InversionConfig
from dva.errors import ConfigError
from dva.face.config import FaceConfig
from dva.models.config import EncoderConfig, ModelConfig
from dva.precision import check_precision
from dva.runtime.config import check_crops_fit_model, check_trained_weights, load_job_config

MODES = ("reconstruction", "edit")
# Identity networks for TL-ID / TG-ID, by `dva.models.encoders` kind, with the aligned-crop side each reads best:
# dlib chips the face to 150 px itself; both ArcFace crops are defined on a 256 FFHQ crop.
IDENTITY_CROP_SIZES = {"dlib_identity": 160, "insightface_arcface": 256, "reference_arcface": 256}


@dataclass
class EvalConfig:
    """`mode` reconstruction: videos → face crops → invert + DDIM generate per inversion method and N → SSIM, MS-SSIM,
    MSE, PSNR, LPIPS, relative x0 error, UNet calls and seconds; with `identity_target`, also the strength and
    temporal consistency of an identity edit decoded from the same x_T.
    `mode` edit: an edit job's outputs → TL-ID, TG-ID and face-region flicker per (video, edit)."""

    mode: str = "reconstruction"
    input: str = ""  # reconstruction: a prefix of videos or a manifest file; edit: the edit job's output prefix
    output: str = ""  # results go to <output>/eval/<mode>/; "" = `input` in edit mode
    steps: list[int] = field(default_factory=lambda: [20, 100])  # reconstruction: the DDIM step counts N
    inversion: InversionConfig = field(default_factory=InversionConfig)  # reconstruction: how x0 → x_T is solved
    # reconstruction: the inversion methods compared in one run, each `method` or `method:iterations` (e.g.
    # [ddim, fixed_point:2]; iterations default to `inversion.iterations`); empty = `inversion` alone.
    methods: list[str] = field(default_factory=list)
    # reconstruction: a video of another person; each x_T is also decoded with that person's mean z_id (an identity
    # edit) and scored by the `identity` network: cosine to the target and to the source, TL-ID, TG-ID. "" = off.
    identity_target: str = ""
    batch_frames: int = 16  # frames per UNet (or identity network) batch
    max_frames: int = 0  # reconstruction: evaluate at most this many frames per video (0 = all)
    precision: str = "auto"  # auto = bf16 autocast on GPU, fp32 on CPU
    device: str = "auto"  # auto = cuda when available
    lpips_weights: Optional[str] = None  # full LPIPS(alex) state dict; unset = LPIPS skipped, the reason recorded
    # Identity network for TL-ID / TG-ID: kind dlib_identity (offline), insightface_arcface or reference_arcface.
    identity: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="dlib_identity", dim=128))
    identity_crop_size: int = 0  # side of the face crops the identity network sees; 0 = the kind's natural size
    fail_fast: bool = False  # stop at the first failed video instead of recording it and going on
    model_preset: str = "dva256"
    face_preset: str = "dlib"
    model: ModelConfig = field(default_factory=ModelConfig)
    # reconstruction: run without `model.checkpoint`, on a UNet with random weights: for tests, rehearsals and
    # benchmarks only (it returns every input unchanged, so the scores are not a model's); the console, the summary
    # and the report say so. Without it, a reconstruction run with no checkpoint does not start. (Edit mode scores
    # an edit job's videos and runs no UNet: it needs neither.)
    random_weights: bool = False
    face: FaceConfig = field(default_factory=FaceConfig)

    @property
    def output_prefix(self) -> str:
        return self.output or self.input

    @property
    def crop_size_for_identity(self) -> int:
        return self.identity_crop_size or IDENTITY_CROP_SIZES[self.identity.kind]

    @property
    def inversions(self) -> list[InversionConfig]:
        """The inversion methods to compare: `methods` parsed, or `inversion` alone when it is empty."""
        return [parse_method(text, self.inversion.iterations, f"methods[{i}]")
                for i, text in enumerate(self.methods)] or [self.inversion]

    def validate(self, key: str) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"config key `mode`: {self.mode!r} is not one of {MODES}")
        if not self.input:
            what = "a folder/prefix of videos or a manifest" if self.mode == "reconstruction" else (
                "the output prefix of an edit job")
            raise ConfigError(f"config key `input`: set it to {what}")
        if self.mode == "reconstruction" and not self.output:
            raise ConfigError("config key `output`: set it to a folder or s3:// prefix for the results")
        check_precision(self.precision, "precision")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"config key `device`: {self.device!r} is not one of auto, cpu, cuda")
        if not self.steps or min(self.steps) < 2:
            raise ConfigError(f"config key `steps`: {list(self.steps)} must be DDIM step counts of at least 2")
        labels = [cfg.label for cfg in self.inversions]  # parses and validates `methods`
        if len(set(labels)) != len(labels):
            raise ConfigError(f"config key `methods`: {list(self.methods)} names one method twice")
        if self.batch_frames < 1 or self.max_frames < 0:
            raise ConfigError("config keys `batch_frames` (>= 1) and `max_frames` (>= 0, 0 = all) are out of range")
        if self.identity.kind not in IDENTITY_CROP_SIZES:
            raise ConfigError(f"config key `identity.kind`: {self.identity.kind!r} is not one of "
                              f"{sorted(IDENTITY_CROP_SIZES)}")
        if self.identity_target and self.mode != "reconstruction":
            raise ConfigError("config key `identity_target`: only reconstruction mode decodes identity edits; an edit "
                              "job's identity edits are scored by `mode=edit`")
        if self.identity_crop_size and self.identity_crop_size < 32:
            raise ConfigError("config key `identity_crop_size`: at least 32 (or 0 for the network's own size)")
        if self.mode == "reconstruction":
            check_crops_fit_model(self.face, self.model)
            check_trained_weights(self.model, self.random_weights)


def parse_method(text: str, iterations: int, key: str) -> InversionConfig:
    """`method` or `method:iterations` (an entry of `methods`) as an InversionConfig, validated."""
    method, _, count = str(text).partition(":")
    if count and not count.isdigit():
        raise ConfigError(f"config key `{key}`: {text!r} is not `method` or `method:iterations` (e.g. fixed_point:2)")
    cfg = InversionConfig(method, int(count) if count else iterations)
    cfg.validate(key)
    return cfg


def load_eval_config(name_or_path: str, overrides: Sequence[str] = ()) -> EvalConfig:
    """A preset from configs/eval/ (or a YAML path) over its model and face presets, plus `key=value` overrides."""
    return load_job_config(EvalConfig, name_or_path, overrides, group="eval")
