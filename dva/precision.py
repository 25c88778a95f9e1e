"""The precision vocabulary of every config (`precision`, `clip_edit.precision`, `optim.amp`) and what each value
means for `torch.autocast`. Inference, training, CLIP editing and the benchmarks all read their setting here."""

from __future__ import annotations

import enum
from typing import Optional, Sequence

import torch

from dva.errors import ConfigError


class Precision(str, enum.Enum):
    AUTO = "auto"  # bf16 autocast on CUDA, float32 elsewhere
    FP32 = "fp32"  # no autocast
    BF16 = "bf16"
    FP16 = "fp16"  # training adds a gradient scaler


PRECISIONS = tuple(p.value for p in Precision)


def check_precision(value: str, key: str, allowed: Sequence[str] = PRECISIONS) -> Precision:
    """`value` as a Precision; a ConfigError naming config key `key` when it is not one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"config key `{key}`: {value!r} is not one of {', '.join(allowed)}")
    return Precision(value)


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of a precision on `device`; None means float32 (no autocast)."""
    precision = Precision(precision)
    if precision is Precision.AUTO:
        return torch.bfloat16 if device.type == "cuda" else None
    return {Precision.FP32: None, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[precision]
