"""`dva convert-reference`: the reference authors' released checkpoint (a PyTorch Lightning `.ckpt`, local or
s3://) → a dva checkpoint (safetensors) and its model config, with no retraining.

The translation itself (key map, safe reading, frozen networks) is `dva.models.reference.convert`; this command
resolves the files (`dva.runtime.weights`) and writes the result.
"""

from __future__ import annotations

import copy
from pathlib import Path

from dva.config import load_config, to_yaml
from dva.errors import ConfigError, MissingWeightsError
from dva.models.checkpoint import describe_mismatch
from dva.models.config import ModelConfig
from dva.models.reference.convert import EXPECTED_CKPT, PARTS, ROLES, meta_model, reference_roles, role_state
from dva.runtime.weights import read_reference_checkpoint, resolve_encoder, save_checkpoint
from dva.storage import join


def convert(ckpt: str, out: str | Path, cfg: ModelConfig | None = None, *, encoders_dir: str | Path | None = None,
            use_ema: bool = True) -> tuple[Path, dict[str, str]]:
    """Write the dva checkpoint `out` (safetensors: weights plus config) and its config `out`.yaml from a reference
    Lightning checkpoint; return the path and where each frozen network came from.

    `cfg` (default `configs/model/reference256.yaml`) must describe the checkpoint's UNet. Each reference network it
    configures comes from the checkpoint, else from `encoders_dir`/<released file name>, else from its `weights`.
    The written config points at no weight files: everything the model needs is in `out`.
    """
    cfg = copy.deepcopy(cfg) if cfg is not None else load_config(ModelConfig, "reference256", group="model")
    if not reference_roles(cfg):
        raise ConfigError(f"model config {cfg.name!r} has no reference encoders (kinds {sorted(PARTS)}); "
                          "use `--config reference256`")
    full = read_reference_checkpoint(ckpt, use_ema=use_ema, config_key="--ckpt")
    state = {k: v for k, v in full.items() if not k.startswith(tuple(f"{r}." for r in ROLES))}
    sources = {}
    for role, (enc, part) in reference_roles(cfg).items():
        own, sources[role] = role_state(full, role), "checkpoint"
        if not own:
            if encoders_dir is not None:
                enc.weights, enc.sha256 = join(encoders_dir, part.file_name), None
            if not enc.weights:
                raise MissingWeightsError(ckpt, "--ckpt", f"holds no weights for `{role}` ({enc.kind}); pass "
                                          f"`--encoders DIR` with {part.file_name} in DIR, or set `{role}.weights`")
            own, sources[role] = part.from_file(resolve_encoder(enc, role), role).state_dict(), str(enc.weights)
        state.update({f"{role}.{k}": v for k, v in own.items()})
        enc.weights = enc.sha256 = None
    model = meta_model(cfg)
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise MissingWeightsError(ckpt, "--ckpt", f"does not fit model config {cfg.name!r} ({problem}); expected "
                                  f"{EXPECTED_CKPT}, with the UNet sizes of the config")
    cfg.checkpoint = None
    path = Path(out)
    save_checkpoint(path, model, state, kind="ema" if use_ema else "raw")
    cfg.checkpoint = str(path.resolve())
    path.with_suffix(".yaml").write_text(to_yaml(cfg))
    return path, sources
