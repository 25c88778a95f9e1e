"""The fused GroupNorm chains (`generate.norm_kernels: triton`), interpreted on the CPU, against the eager modules.

Tolerances. float32 inputs: both paths compute mean and variance in float32 over the ≤ 8192 elements of a group,
in different orders (PyTorch's CPU kernel; tiles combined by Chan's pairwise update). Summation error is of order
log2(n)·2⁻²⁴ ≈ 1e-6 relative per statistic, and outputs here are |y| ≲ 15, so 2e-5 absolute + 2e-5 relative holds
with margin (measured ≤ 3e-6). bf16 inputs: the fused chain computes in float32 and rounds once, so against the
float32 chain on the same (upcast) inputs each output is within half a bf16 unit in the last place, ≤ 2⁻⁸·|y|,
plus the float32 error above. The eager bf16 chain rounds after the norm, after 1+s, after · and + and after SiLU;
the fused one must be at least as close to float32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dva.errors import ConfigError, DvaError
from dva.models.unet import normalization, use_fused_norms

F32_TOL = 2e-5

CHAINS = {  # where each chain sits: (modulated, SiLU)
    "attention norm": (False, False),
    "in_layers / final norm": (False, True),
    "out_layers, modulated": (True, True),
}


def _chain_inputs(channels: int, shape: tuple, layout: str, dtype: torch.dtype, modulated: bool, offset=0.0):
    torch.manual_seed(channels)
    norm = normalization(channels)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(shape) * 3 + offset
    if layout == "NHWC":
        x = x.contiguous(memory_format=torch.channels_last)
    modulation = torch.randn(shape[0], 2 * channels) if modulated else None
    x = x.to(dtype)
    return norm, x, None if modulation is None else modulation.to(dtype)


def _run(norm, x, modulation, silu, fused: bool) -> torch.Tensor:
    use_fused_norms(norm, "cpu", enabled=fused)
    try:
        with torch.no_grad():
            return norm.chain(x, modulation, silu)
    finally:
        use_fused_norms(norm, "cpu", enabled=False)


SHAPES = {"NCHW": (2, 96, 12, 10), "NHWC": (2, 96, 12, 10), "3-D": (2, 64, 40)}  # 96: 3 channels per group
# The attention block normalises [B, C, H·W] (a view of its NCHW or NHWC input); the other chains see images.
CASES = [(chain, layout) for chain in CHAINS for layout in SHAPES if layout != "3-D" or chain == "attention norm"]


@pytest.mark.parametrize("chain, layout", CASES)
def test_fused_chain_matches_eager_float32(interpreted_triton, chain, layout):
    modulated, silu = CHAINS[chain]
    shape = SHAPES[layout]
    norm, x, mod = _chain_inputs(shape[1], shape, layout, torch.float32, modulated)
    eager, fused = _run(norm, x, mod, silu, False), _run(norm, x, mod, silu, True)
    assert fused.dtype == torch.float32 and fused.stride() == x.stride()  # the input's layout is kept
    torch.testing.assert_close(fused, eager, atol=F32_TOL, rtol=F32_TOL)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("chain", CHAINS)
def test_fused_bf16_chain_rounds_once(interpreted_triton, chain, layout):
    modulated, silu = CHAINS[chain]
    shape = SHAPES[layout]
    norm, x, mod = _chain_inputs(shape[1], shape, layout, torch.bfloat16, modulated)
    exact = _run(norm, x.float(), None if mod is None else mod.float(), silu, False)
    fused = _run(norm, x, mod, silu, True)
    eager = _run(norm, x, mod, silu, False)
    assert fused.dtype == eager.dtype == torch.bfloat16 and fused.stride() == x.stride()
    error = (fused.float() - exact).abs()
    assert (error <= 2.0**-8 * exact.abs() + F32_TOL).all(), (error / exact.abs()).max()
    assert error.max() <= (eager.float() - exact).abs().max()


def test_gpu_tiling_combines_spans_tiles_and_channel_blocks(interpreted_triton):
    """The GPU's tiling (≤ 64 spans per image, 64-channel blocks, ragged last tiles), interpreted: what runs there."""
    from dva.models import fused_norm_kernels

    norm, x, mod = _chain_inputs(128, (1, 128, 50, 47), "NHWC", torch.float32, modulated=True)
    fused = fused_norm_kernels.group_norm_chain(x, norm.weight, norm.bias, mod, norm.num_groups, norm.eps, True,
                                                torch.float32, tiling=fused_norm_kernels.GPU_TILING)
    torch.testing.assert_close(fused, _run(norm, x, mod, True, False), atol=F32_TOL, rtol=F32_TOL)


def test_statistics_stay_exact_far_from_zero(interpreted_triton):
    """Inputs offset by 300× their spread: E[x²] − E[x]² in float32 would lose the variance; the pairwise update
    does not. Reference: the same chain in float64."""
    norm, x, _ = _chain_inputs(64, (2, 64, 16, 16), "NCHW", torch.float32, modulated=False, offset=1000.0)
    fused = _run(norm, x, None, False, True)
    exact = F.group_norm(x.double(), norm.num_groups, norm.weight.double(), norm.bias.double(), norm.eps)
    assert (fused.double() - exact).abs().max() < 1e-3


def test_fused_norms_refuse_a_call_that_needs_gradients(interpreted_triton):
    norm, x, mod = _chain_inputs(32, (1, 32, 4, 4), "NCHW", torch.float32, modulated=True)
    use_fused_norms(norm, "cpu")
    with pytest.raises(DvaError, match="no backward.*no_grad"):
        norm.chain(x.requires_grad_(), mod, True)
    with torch.no_grad():  # parameters that require grad are fine for inference
        assert torch.isfinite(norm.chain(x, mod, True)).all()


def test_fused_norms_need_a_gpu_unless_interpreted(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="generate.norm_kernels.*CUDA"):
        use_fused_norms(normalization(32), "cpu")


def test_tiny_unet_with_fused_norms_matches_eager(interpreted_triton, random_tiny_unet):
    """One forward of the whole tiny UNet: float32 fused ≈ eager float32; bf16 autocast NHWC fused is no further
    from float32 than the eager bf16 path (which tests/unit/test_fast_path.py bounds)."""
    unet = random_tiny_unet
    x, cond, t = torch.randn(1, 3, 32, 32), torch.randn(1, unet.cfg.embed_channels), torch.tensor([500])

    def forward(fused: bool, dtype=None):
        use_fused_norms(unet, "cpu", enabled=fused)
        fmt = torch.channels_last if dtype else torch.contiguous_format
        unet.to(memory_format=fmt)
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                return unet(x.contiguous(memory_format=fmt), t, cond)
        finally:
            use_fused_norms(unet, "cpu", enabled=False)
            unet.to(memory_format=torch.contiguous_format)

    def relative(a, b):
        return ((a.float() - b).norm() / b.norm()).item()

    reference = forward(False)
    assert relative(forward(True), reference) < 1e-5
    fused_bf16, eager_bf16 = relative(forward(True, torch.bfloat16), reference), relative(
        forward(False, torch.bfloat16), reference)
    assert 0 < fused_bf16 < 1.05 * eager_bf16 < 0.02, (fused_bf16, eager_bf16)


def test_unet_with_fused_norms_traces_to_one_graph(interpreted_triton, random_tiny_unet):
    """The fused chains are one custom op each, opaque to torch.compile: no graph breaks."""
    use_fused_norms(random_tiny_unet, "cpu")
    x, cond = torch.randn(1, 3, 32, 32), torch.randn(1, random_tiny_unet.cfg.embed_channels)
    with torch.no_grad():
        explained = torch._dynamo.explain(random_tiny_unet)(x, torch.tensor([10]), cond)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    assert "dva.group_norm_chain" in str(explained.graphs[0].graph)
