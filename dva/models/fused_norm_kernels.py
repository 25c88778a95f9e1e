"""The Triton kernels behind `dva.models.fused_norm` (imported only when the fused path is selected).

A chain is two passes over x and one write: statistics need the whole group before its first output (a 256² group
is far larger than one program's registers), so

  1. `_partial_stats`: per (image, span of positions, block of channels), each channel's mean and M2 (the sum of
     squared deviations) in float32, tile by tile with Chan's pairwise update (no E[x²]−E[x]² cancellation);
  2. `_group_coefficients`: per (image, group), the spans and channels combined the same way, then folded with
     the affine weight/bias and the modulation into per-channel `centre, scale, offset`;
  3. `_normalise`: y = (x − centre)·scale + offset, SiLU, rounded once to the output dtype.

Tiles are [positions × channels] addressed through strides, so NCHW and channels_last inputs both read
contiguously along their fastest axis, and the output keeps the input's layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl


@triton.jit
def _to_output(y, dtype: tl.constexpr):
    """y rounded to `dtype`; to bf16 with explicit round-to-nearest-even on the bits, because the interpreter's
    float32→bf16 cast truncates while the GPU's rounds: the CPU tests then see the GPU's numerics."""
    if dtype == tl.bfloat16:
        bits = y.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return y.to(dtype)


@triton.jit
def _partial_stats(x_ptr, mean_ptr, m2_ptr, C, L, SPAN, S, stride_b, stride_c, stride_l,
                   BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    b, s, cb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    base = x_ptr + b.to(tl.int64) * stride_b + cols[None, :].to(tl.int64) * stride_c
    start = s * SPAN
    end = tl.minimum(start + SPAN, L)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for row0 in range(start, end, BLOCK_L):
        rows = row0 + tl.arange(0, BLOCK_L)
        ok = (rows < end)[:, None] & col_ok[None, :]
        x = tl.load(base + rows[:, None].to(tl.int64) * stride_l, mask=ok, other=0.0).to(tl.float32)
        seen = (row0 - start).to(tl.float32)
        n = tl.minimum(end - row0, BLOCK_L).to(tl.float32)
        tile_mean = tl.sum(x, axis=0) / n
        centred = tl.where(ok, x - tile_mean[None, :], 0.0)
        delta = tile_mean - mean
        total = seen + n
        mean += delta * (n / total)
        m2 += tl.sum(centred * centred, axis=0) + delta * delta * (seen * n / total)
    out = (b * S + s) * C + cols
    tl.store(mean_ptr + out, mean, mask=col_ok)
    tl.store(m2_ptr + out, m2, mask=col_ok)


@triton.jit
def _group_coefficients(mean_ptr, m2_ptr, weight_ptr, bias_ptr, mod_ptr, centre_ptr, scale_ptr, offset_ptr,
                        C, L, SPAN, S, G, CPG, eps, stride_mod, HAS_MOD: tl.constexpr,
                        BLOCK_S: tl.constexpr, BLOCK_GROUPS: tl.constexpr, BLOCK_G: tl.constexpr):
    b, gb = tl.program_id(0), tl.program_id(1)
    groups = gb * BLOCK_GROUPS + tl.arange(0, BLOCK_GROUPS)
    j = tl.arange(0, BLOCK_G)
    chans = groups[:, None] * CPG + j[None, :]  # [groups, channels of a group]
    chan_ok = (groups < G)[:, None] & (j < CPG)[None, :]
    spans = tl.arange(0, BLOCK_S)
    ok = (spans < S)[:, None, None] & chan_ok[None, :, :]
    idx = (b * S + spans[:, None, None]) * C + chans[None, :, :]
    mean = tl.load(mean_ptr + idx, mask=ok, other=0.0)
    m2 = tl.load(m2_ptr + idx, mask=ok, other=0.0)
    n = tl.where(ok, tl.minimum(L - spans * SPAN, SPAN).to(tl.float32)[:, None, None], 0.0)
    total = L * CPG * 1.0
    group_mean = tl.sum(tl.sum(n * mean, axis=2), axis=0) / total
    dev = tl.where(ok, mean - group_mean[None, :, None], 0.0)
    var = tl.sum(tl.sum(m2 + n * dev * dev, axis=2), axis=0) / total
    rstd = 1.0 / tl.sqrt(var + eps)
    scale = rstd[:, None] * tl.load(weight_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)
    offset = tl.load(bias_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)
    if HAS_MOD:
        row = mod_ptr + b.to(tl.int64) * stride_mod
        factor = 1.0 + tl.load(row + chans, mask=chan_ok, other=0.0).to(tl.float32)
        scale = scale * factor
        offset = offset * factor + tl.load(row + C + chans, mask=chan_ok, other=0.0).to(tl.float32)
    out = b * C + chans
    tl.store(centre_ptr + out, tl.zeros([BLOCK_GROUPS, BLOCK_G], dtype=tl.float32) + group_mean[:, None],
             mask=chan_ok)
    tl.store(scale_ptr + out, scale, mask=chan_ok)
    tl.store(offset_ptr + out, offset, mask=chan_ok)


@triton.jit
def _normalise(x_ptr, y_ptr, centre_ptr, scale_ptr, offset_ptr, C, L,
               sx_b, sx_c, sx_l, sy_b, sy_c, sy_l,
               SILU: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    b, lb, cb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = (lb * BLOCK_L + tl.arange(0, BLOCK_L)).to(tl.int64)
    cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    ok = (rows < L)[:, None] & col_ok[None, :]
    b64, c64 = b.to(tl.int64), cols.to(tl.int64)
    x = tl.load(x_ptr + b64 * sx_b + rows[:, None] * sx_l + c64[None, :] * sx_c, mask=ok, other=0.0)
    coef = b * C + cols
    centre = tl.load(centre_ptr + coef, mask=col_ok, other=0.0)
    scale = tl.load(scale_ptr + coef, mask=col_ok, other=0.0)
    offset = tl.load(offset_ptr + coef, mask=col_ok, other=0.0)
    y = (x.to(tl.float32) - centre[None, :]) * scale[None, :] + offset[None, :]
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(y_ptr + b64 * sy_b + rows[:, None] * sy_l + c64[None, :] * sy_c,
             _to_output(y, y_ptr.dtype.element_ty), mask=ok)

@dataclass(frozen=True)
class Tiling:
    """Tile limits. A GPU wants many programs of a few thousand elements each; the interpreter runs programs one
    after another in Python, so it wants few large ones. Both tilings compute the same sums in a different order."""

    max_tile: int  # elements per [positions × channels] tile
    max_block_c: int  # channels per tile
    max_spans: int  # programs along the positions of one image in the statistics pass


GPU_TILING = Tiling(max_tile=4096, max_block_c=64, max_spans=64)
INTERPRETER_TILING = Tiling(max_tile=1 << 16, max_block_c=1024, max_spans=1)


def group_norm_chain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, modulation: Optional[torch.Tensor],
                     num_groups: int, eps: float, silu: bool, out_dtype: torch.dtype,
                     tiling: Optional[Tiling] = None) -> torch.Tensor:
    """Launch the three kernels; `tiling` defaults to the one that suits where they run."""
    tiling = tiling or (INTERPRETER_TILING if triton.knobs.runtime.interpret else GPU_TILING)
    y = torch.empty_like(x, dtype=out_dtype)
    batch, channels = x.shape[:2]
    xf, yf = x.flatten(2), y.flatten(2)  # views for NCHW and channels_last alike: their spatial dims merge
    length = xf.shape[2]
    block_c = min(triton.next_power_of_2(channels), tiling.max_block_c)
    block_l = max(16, min(tiling.max_tile // block_c, triton.next_power_of_2(length)))
    span = triton.cdiv(triton.cdiv(length, tiling.max_spans), block_l) * block_l
    spans = triton.cdiv(length, span)
    c_blocks = triton.cdiv(channels, block_c)
    f32 = dict(device=x.device, dtype=torch.float32)
    mean, m2 = torch.empty(batch, spans, channels, **f32), torch.empty(batch, spans, channels, **f32)
    _partial_stats[(batch, spans, c_blocks)](xf, mean, m2, channels, length, span, spans, *xf.stride(),
                                             BLOCK_L=block_l, BLOCK_C=block_c)
    centre, scale, offset = (torch.empty(batch, channels, **f32) for _ in range(3))
    cpg = channels // num_groups
    block_s, block_g = triton.next_power_of_2(spans), triton.next_power_of_2(cpg)
    block_groups = min(triton.next_power_of_2(num_groups), max(1, tiling.max_tile // (block_s * block_g)))
    mod = modulation if modulation is not None else scale  # any pointer: HAS_MOD=False never reads it
    _group_coefficients[(batch, triton.cdiv(num_groups, block_groups))](
        mean, m2, weight, bias, mod, centre, scale, offset, channels, length, span, spans, num_groups, cpg, eps,
        mod.stride(0), HAS_MOD=modulation is not None, BLOCK_S=block_s, BLOCK_GROUPS=block_groups, BLOCK_G=block_g)
    _normalise[(batch, triton.cdiv(length, block_l), c_blocks)](
        xf, yf, centre, scale, offset, channels, length, *xf.stride(), *yf.stride(),
        SILU=silu, BLOCK_L=block_l, BLOCK_C=block_c)
    return y
