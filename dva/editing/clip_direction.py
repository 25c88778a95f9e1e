"""CLIP-guided edit directions (SPEC §3.6, CLIP): optimise z_id so that the decoded states move along a text direction.

Given the crops of a few frames (frame 0 by default) and a prompt pair (source → target):
1. z_start = mean z_id of those frames; invert each crop to the last step of an N-step DDIM (N = 5: t = 800) and
   regenerate it with l2norm(z_start), storing every state x_800, x_600, …, x_0, and the clean image.
2. Each iteration denoises all stored states one step with l2norm(z_opt) in one batch and compares the results with
   the stored next states: directional CLIP loss on those noisy states, −log((1 + mean cos)/2), where a state's
   image direction is CLIP(edited) − CLIP(reference) and the text direction is the normalised mean over prompt
   templates of CLIP(target) − CLIP(source); ID loss 1 − cos(z_opt, z_start); masked L1 between the states.
3. Δ = z_opt − z_start goes into a direction file (`dva.editing.direction`), applied as l2norm(z̄ + scale·Δ).

Directions are cached under `output_prefix`, keyed by a hash of the model (config and weights), the frames, the
mask, the prompts and the settings with the CLIP weights' content: the same request again reads the file instead
of optimising.

CLIP comes from open_clip with a local weight file (`clip.weights`, a path or s3:// URI); nothing is downloaded.
The paper's CLIP is OpenAI's ViT-B/16, trained with QuickGELU, so the default architecture is `ViT-B-16-quickgelu`
(right for open_clip-format files of OpenAI's weights, which look like any other open_clip file). OpenAI's own
TorchScript files (`ViT-B-16.pt`) are recognised and always built with QuickGELU. Weights trained with plain GELU
(LAION, DataComp) need the plain architecture name, e.g. `ViT-B-16`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from dva.config import load_config, nested_key, to_yaml
from dva.diffusion.ddim import DDIMScheduler, ddim_generate
from dva.diffusion.inversion import InversionConfig, invert
from dva.editing.artifact import digest, identity_encoder_id, l2norm
from dva.editing.direction import FORMAT as DIRECTION_FORMAT
from dva.editing.direction import EditDirection
from dva.errors import ConfigError, DvaError, MissingWeightsError
from dva.precision import Precision, autocast_dtype, check_precision
from dva.storage import content_digest, exists, local_path

# The precisions of a CLIP optimisation: fp16 autocast would need a gradient scaler, and `auto` would give a
# cached direction (whose key holds the settings) a precision that depends on the device it was made on.
CLIP_PRECISIONS = (Precision.FP32.value, Precision.BF16.value)
# A CLIP small enough for CPU tests and benchmarks (ViT and text transformer of 2 layers, 32-d embedding).
TINY_CLIP = "dva-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


# Entries of OpenAI's TorchScript state dicts that are hyper-parameters, not weights (open_clip drops them too).
OPENAI_HYPERPARAMETERS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class ClipModelConfig:
    name: str = "ViT-B-16-quickgelu"  # an open_clip architecture name (OpenAI's ViT-B/16, as the paper used)
    weights: Optional[str] = None  # open_clip_pytorch_model.bin / .safetensors: local path or s3:// URI
    sha256: Optional[str] = None


@dataclass
class LossWeights:
    clip: float = 5.0
    id: float = 1.0
    l1: float = 5.0


@dataclass
class ClipEditConfig:
    """Settings of one CLIP direction optimisation (`configs/edit_methods/clip.yaml`)."""

    clip: ClipModelConfig = field(default_factory=ClipModelConfig)
    templates: list[str] = field(default_factory=lambda: [
        "a photo of a {}.", "a close-up photo of a {}.", "a cropped photo of the {}.", "a good photo of the {}.",
        "a bright photo of a {}.", "a dark photo of the {}.", "a low resolution photo of a {}.",
        "a high resolution photo of the {}.",
    ])
    frames: list[int] = field(default_factory=lambda: [0])  # which crops give z_start and the states
    steps: int = 5  # the DDIM schedule the states live on: 5 → t ∈ {0, 200, 400, 600, 800}
    inversion: InversionConfig = field(default_factory=InversionConfig)  # how the chosen crops are inverted
    iterations: int = 2000
    lr: float = 0.002
    loss_weights: LossWeights = field(default_factory=LossWeights)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the UNet and CLIP forward passes)
    output_prefix: Optional[str] = None  # folder or URI for direction files; None: no cache, nothing written

    def validate(self, key: str) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"config key `{nested_key(key, name)}`: {why}")

        if self.steps < 2:
            raise bad("steps", f"{self.steps} must be at least 2")
        if self.iterations < 1:
            raise bad("iterations", f"{self.iterations} must be at least 1")
        if not self.lr > 0:
            raise bad("lr", f"{self.lr} must be positive")
        for name, w in dataclasses.asdict(self.loss_weights).items():
            if not (math.isfinite(w) and w >= 0):
                raise bad(f"loss_weights.{name}", f"{w} must be a finite number ≥ 0")
        check_precision(self.precision, nested_key(key, "precision"), CLIP_PRECISIONS)
        wrong = [t for t in self.templates if t.count("{}") != 1]
        if not self.templates or wrong:
            raise bad("templates", "each template needs exactly one {} for the prompt; "
                                   f"bad: {wrong or 'none given'}")
        if not self.frames:
            raise bad("frames", "name at least one frame index")


def load_clip_edit_config(name_or_path: str | Path = "clip", overrides: Sequence[str] = ()) -> ClipEditConfig:
    """A preset of `configs/edit_methods/` (default `clip`) or a YAML path, with `key=value` overrides."""
    return load_config(ClipEditConfig, name_or_path, overrides, group="edit_methods")


def register_tiny_clip() -> None:
    """Make `dva-tiny-clip` an open_clip architecture name in this process."""
    import open_clip

    if TINY_CLIP in open_clip.list_models():
        return
    path = Path(tempfile.mkdtemp(prefix="dva-open-clip-")) / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(path)


class ClipDirectionalLoss(nn.Module):
    """A frozen open_clip model with its tokenizer and image preprocessing, scoring edits against a text direction."""

    def __init__(self, model: nn.Module, tokenizer: Callable, templates: Sequence[str]):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.templates = list(templates)
        pre = model.visual.preprocess_cfg
        size = pre["size"]
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.interpolation = pre.get("interpolation", "bicubic")
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre["std"]).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's own preprocessing for images in [−1, 1], differentiably: shortest side to the input size
        (antialiased), centre crop, CLIP mean/std. Noisy states are not clamped: their excess is what CLIP sees."""
        x = (images.float() + 1) / 2
        (h, w), (th, tw) = x.shape[-2:], self.size
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        if (nh, nw) != (h, w):
            x = nn.functional.interpolate(x, size=(nh, nw), mode=self.interpolation, antialias=True,
                                          align_corners=False)
        top, left = (nh - th) // 2, (nw - tw) // 2
        x = x[..., top:top + th, left:left + tw]
        return (x - self.mean) / self.std

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return l2norm(self.model.encode_image(self.preprocess(images)).float())

    @torch.no_grad()
    def text_features(self, text: str) -> torch.Tensor:
        tokens = self.tokenizer([t.format(text) for t in self.templates]).to(self.device)
        return l2norm(self.model.encode_text(tokens).float())

    @torch.no_grad()
    def text_direction(self, source: str, target: str) -> torch.Tensor:
        """Unit mean over templates of target − source text embeddings, [D]."""
        return l2norm((self.text_features(target) - self.text_features(source)).mean(0))

    def directional_loss(self, reference_features: torch.Tensor, edited: torch.Tensor, text_direction: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(−log((1 + mean cos)/2), mean cos) between each state's image direction and the text direction."""
        delta = self.image_features(edited) - reference_features
        # The reference normalises with +1e-7 so that identical images give a zero direction, not NaN.
        direction = delta / (delta.norm(dim=-1, keepdim=True) + 1e-7)
        cos = (direction @ text_direction).mean()
        return -torch.log((1 + cos) / 2), cos


def is_openai_archive(path: str | Path) -> bool:
    """Whether `path` is one of OpenAI's own CLIP files: a TorchScript archive (a zip with a `constants.pkl` record,
    the mark torch itself recognises them by), unlike open_clip's plain state dicts."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def _create_clip(name: str, path: Path, device: str | torch.device) -> nn.Module:
    """open_clip `name` with the weights at `path`. OpenAI's TorchScript files are read for their state dict only
    (open_clip's loader refuses them under `weights_only`; no TorchScript code is run) into the architecture built
    with QuickGELU, the activation OpenAI trained with, whatever `name` says."""
    import open_clip

    if not is_openai_archive(path):
        # An absolute path is never taken for a pretrained tag, so open_clip reads the file and fetches nothing.
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(path.resolve()), device=device)
        return model
    with warnings.catch_warnings():  # torch.jit is deprecated, but OpenAI's files exist only in its format
        warnings.simplefilter("ignore", FutureWarning)
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    model = open_clip.create_model(name, force_quick_gelu=True)
    model.load_state_dict({k: v for k, v in state.items() if k not in OPENAI_HYPERPARAMETERS})
    return model.to(device)


def load_clip(cfg: ClipModelConfig, templates: Sequence[str], device: str | torch.device = "cpu",
              config_key: str = "clip") -> ClipDirectionalLoss:
    """open_clip `cfg.name` with the weights of the local file or URI `cfg.weights`; never downloads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before open_clip imports huggingface_hub
    import open_clip

    path = local_path(cfg.weights, config_key=f"{config_key}.weights", sha256=cfg.sha256)
    if cfg.name == TINY_CLIP:
        register_tiny_clip()
    if cfg.name not in open_clip.list_models():
        raise ConfigError(f"config key `{config_key}.name`: unknown open_clip architecture {cfg.name!r}; "
                          f"e.g. ViT-B-16, ViT-B-32, ViT-L-14 or {TINY_CLIP}")
    try:
        model = _create_clip(cfg.name, path, device)
    except Exception as err:  # torch.load, safetensors and state-dict errors share no base class
        raise MissingWeightsError(str(cfg.weights), f"{config_key}.weights",
                                  f"cannot be loaded as open_clip {cfg.name} weights ({str(err)[:300]})") from None
    return ClipDirectionalLoss(model, open_clip.get_tokenizer(cfg.name), templates).to(device)


def hash_model(model: nn.Module, encoder_id: str | None = None) -> str:
    """SHA-256 of a DVA model's config, identity encoder and trained weights (the z_face linear and the UNet)."""
    state = model.trainable_state_dict()
    encoder_id = encoder_id or identity_encoder_id(model)
    return digest(to_yaml(model.cfg), encoder_id, *(x for k in sorted(state) for x in (k, state[k])))


def direction_settings(cfg: ClipEditConfig, weights_digest: Callable[[str], str] = content_digest) -> str:
    """The settings that change the optimised Δ (the output location does not), the CLIP weights by their content
    (`weights_digest` of their URI): a file replaced at the same location is another key, the same file elsewhere
    the same one."""
    d = dataclasses.asdict(cfg)
    d.pop("output_prefix")
    if cfg.clip.weights:
        d["clip"]["weights"] = weights_digest(cfg.clip.weights)
    return json.dumps(d, sort_keys=True)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "edit"


def _select_frames(frames, indices: Sequence[int], device) -> torch.Tensor:
    n = len(frames)
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise ConfigError(f"config key `frames`: indices {bad} are out of range for {n} frames")
    return torch.stack([torch.as_tensor(frames[i]) for i in indices]).float().to(device)


@dataclass
class ClipEditResult:
    direction: EditDirection
    uri: Optional[str]  # where the direction file is, when `output_prefix` is set
    from_cache: bool


LOSS_NAMES = ("total", "clip", "id", "l1", "cos")  # cos: mean cosine of image and text directions
# on_iteration(iteration, {name: value for name in LOSS_NAMES}), values as floats.
IterationCallback = Callable[[int, dict[str, float]], None]


def optimise_clip_direction(
    model: nn.Module, frames, source: str, target: str, cfg: ClipEditConfig, *,
    clip: ClipDirectionalLoss | Callable[[], ClipDirectionalLoss] | None = None, mask: torch.Tensor | None = None,
    source_id: str = "", model_hash: str | None = None,
    on_iteration: IterationCallback | None = None,
) -> ClipEditResult:
    """Δz_id that edits `source` → `target`, read from the cache when this exact request was made before.

    `frames`: aligned crops in [−1, 1] at the model's size, a tensor [N, 3, H, W] or a sequence of [3, H, W]; the
    ones in `cfg.frames` are used. `mask`: [1 or F, 1, H, W] in [0, 1] over those frames for the L1 term (all ones
    when None). `clip`: an already loaded `ClipDirectionalLoss`, or a function returning one (called only on a cache
    miss); None loads `cfg.clip`, also only on a miss. `source_id` names the video or image in the file's metadata
    and the cache key. `model_hash`: `hash_model(model)` when the caller already has it (it hashes every trained
    weight: about a second for dva256), so that many videos edited with one model hash it once.
    """
    device = next(model.parameters()).device
    crops = _select_frames(frames, cfg.frames, device)
    if crops.shape[-2:] != (model.image_size, model.image_size):
        raise DvaError(f"CLIP editing needs {model.image_size}² crops, got {tuple(crops.shape[-2:])}")
    if mask is not None:
        mask = mask.float().to(device).expand(crops.shape[0], 1, *crops.shape[-2:])
    encoder_id = identity_encoder_id(model)
    model_hash = model_hash or hash_model(model, encoder_id)
    key = digest(DIRECTION_FORMAT, model_hash, crops, "mask", mask, source_id, source, target,
                 direction_settings(cfg))
    uri = None
    if cfg.output_prefix:
        uri = f"{cfg.output_prefix.rstrip('/')}/clip-{_slug(target)}-{key[:16]}.safetensors"
        if exists(uri):
            return ClipEditResult(EditDirection.load(uri), uri, from_cache=True)
    if clip is None:
        clip = load_clip(cfg.clip, cfg.templates, device)
    elif not isinstance(clip, ClipDirectionalLoss):
        clip = clip()
    started = time.perf_counter()
    delta, z_start, losses = _optimise(model, crops, mask, source, target, cfg, clip, on_iteration)
    seconds = time.perf_counter() - started
    direction = EditDirection(delta, encoder_id, z_start, losses, metadata={
        "kind": "clip", "source": source, "target": target, "source_id": source_id, "cache_key": key,
        "model": model_hash, "clip": cfg.clip.name, "config": to_yaml(cfg),
        "seconds": f"{seconds:.3f}", "seconds_per_iteration": f"{seconds / cfg.iterations:.5f}",
    })
    if uri:
        direction.save(uri)
        direction.metadata["uri"] = uri
    return ClipEditResult(direction, uri, from_cache=False)


def _step_rows(sched: DDIMScheduler, eps: torch.Tensor, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One DDIM generation step for a batch whose rows sit at different spaced indices."""
    out = torch.zeros_like(x)
    for i in index.unique().tolist():
        rows = (index == i).nonzero().squeeze(1)
        out = out.index_put((rows,), sched.step(eps[rows], i, x[rows])[0])
    return out


def _optimise(model, crops: torch.Tensor, mask: torch.Tensor | None, source: str, target: str,
              cfg: ClipEditConfig, clip: ClipDirectionalLoss, on_iteration: IterationCallback | None):
    """(Δ, z_start, loss curves) of one optimisation, with the model in eval mode throughout."""
    was_training = model.training
    model.eval()
    try:
        return _optimise_eval(model, crops, mask, source, target, cfg, clip, on_iteration)
    finally:
        model.train(was_training)


def _optimise_eval(model, crops, mask, source, target, cfg, clip, on_iteration):
    device = crops.device
    amp = autocast_dtype(cfg.precision, device)
    autocast = torch.autocast(device.type, dtype=amp, enabled=amp is not None)
    sched = DDIMScheduler.create(cfg.steps)
    n_frames, n_steps = crops.shape[0], sched.num_steps

    z_lnd = model.encode_landmarks(crops)
    z_start = model.encode_identity(crops).mean(0)
    z0 = l2norm(z_start)
    with torch.no_grad():
        cond = model.face_code(z0, z_lnd)
    states = [invert(cfg.inversion, model, crops, cond, sched, autocast_dtype=amp)]
    ddim_generate(model, states[0], cond, sched, autocast_dtype=amp,
                  callback=lambda i, t, x, x0: states.append(x))
    # Row f·S + j holds frame f's j-th state (spaced index S−1−j) and, as reference, the state one step later.
    x_in = torch.stack(states[:-1], 1).flatten(0, 1)
    reference = torch.stack(states[1:], 1).flatten(0, 1)
    index = torch.arange(n_steps - 1, -1, -1, device=device).repeat(n_frames)
    t = torch.tensor(sched.timesteps, device=device)[index]
    lnd_rows = z_lnd.repeat_interleave(n_steps, 0)
    mask_rows = None if mask is None else mask.repeat_interleave(n_steps, 0)
    with torch.no_grad(), autocast:
        reference_features = clip.image_features(reference)
        text_direction = clip.text_direction(source, target).float()

    w = cfg.loss_weights
    z_opt = z_start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z_opt], lr=cfg.lr)
    curve = []
    for it in range(cfg.iterations):
        with torch.enable_grad():
            z = l2norm(z_opt)
            with autocast:
                eps = model(x_in, t, model.face_code(z, lnd_rows)).float()
            edited = _step_rows(sched, eps, index, x_in)
            with autocast:
                loss_clip, cos = clip.directional_loss(reference_features, edited, text_direction)
            loss_id = 1 - (z * z0).sum()
            diff = edited - reference
            loss_l1 = (diff if mask_rows is None else diff * mask_rows).abs().mean()
            total = w.clip * loss_clip.float() + w.id * loss_id + w.l1 * loss_l1
            (z_opt.grad,) = torch.autograd.grad(total, [z_opt])
        opt.step()
        curve.append(torch.stack([total, loss_clip.float(), loss_id, loss_l1, cos.float()]).detach())
        if on_iteration is not None:
            on_iteration(it, dict(zip(LOSS_NAMES, curve[-1].tolist())))
    curve_t = torch.stack(curve).cpu()
    losses = {name: curve_t[:, i] for i, name in enumerate(LOSS_NAMES)}
    return (z_opt.detach() - z_start).cpu(), z_start.cpu(), losses
