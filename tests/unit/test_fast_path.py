"""The fast inference path (bf16 autocast, channels_last) against float32, on a trained model and real face crops.

Tolerance, measured on the shipped demo64 checkpoint with the astronaut sample's crops (CPU, one thread): the
relative L2 error of x0 after invert+generate, bf16 vs float32, is 0.93 % at N=10 and 0.48 % at N=20, while the
float32 path's own reconstruction error is 23 % and 11 %. bf16 keeps 8 mantissa bits (≈0.4 % per rounding); the
clamped DDIM updates do not amplify it over 2N−1 calls. We allow 2 % and, so that a precision loss can never be
mistaken for model error, at most a tenth of the float32 reconstruction error. channels_last only reorders float32
reductions: 1e-4. The fused GroupNorm kernels (`generate.norm_kernels: triton`) are held to the same bounds.
"""

from __future__ import annotations

import pytest
import torch

from dva.config import load_config
from dva.demo import SHIPPED_CHECKPOINT, training_set
from dva.diffusion import ddim_generate, ddim_invert
from dva.runtime.weights import load_model
from dva.models.config import ModelConfig
from dva.models.unet import use_fused_norms

STEPS = 10


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def trained(sample_clip):
    torch.set_num_threads(1)
    cfg = load_config(ModelConfig, "demo64", group="model", overrides=[f"checkpoint={SHIPPED_CHECKPOINT}"])
    model = load_model(cfg, torch.device("cpu"))
    data = training_set([sample_clip("astronaut", frames=4, size=(320, 240))], model)
    cond = model.face_code(data["z_id"].mean(0, keepdim=True), data["z_lnd"])
    return model.unet, data["images"], cond


def _round_trip(unet, x, cond, dtype=None, memory_format=torch.contiguous_format, fused=False) -> torch.Tensor:
    unet = use_fused_norms(unet.to(memory_format=memory_format), "cpu", enabled=fused)
    x = x.contiguous(memory_format=memory_format)
    try:
        x_T = ddim_invert(unet, x, cond, STEPS, autocast_dtype=dtype)
        return ddim_generate(unet, x_T, cond, STEPS, autocast_dtype=dtype)
    finally:
        use_fused_norms(unet.to(memory_format=torch.contiguous_format), "cpu", enabled=False)


# The fused GroupNorm chains (generate.norm_kernels: triton), in the GPU's layout, run interpreted here: 19 UNet
# calls at ≈ 13 s of CPU each, hence slow.
NORM_KERNELS = ["eager", pytest.param("triton", marks=pytest.mark.slow)]


@pytest.mark.parametrize("norm_kernels", NORM_KERNELS)
def test_bf16_autocast_matches_float32_within_measured_tolerance(trained, norm_kernels, request):
    unet, x, cond = trained
    fused = norm_kernels == "triton"
    if fused:
        request.getfixturevalue("interpreted_triton")
    fp32 = _round_trip(unet, x, cond)
    bf16 = _round_trip(unet, x, cond, torch.bfloat16, torch.channels_last if fused else torch.contiguous_format,
                       fused)
    assert torch.isfinite(bf16).all()
    model_error = _relative(fp32, x)
    precision_error = _relative(bf16, fp32)
    assert 0 < precision_error < 0.02, precision_error
    assert precision_error < 0.1 * model_error, (precision_error, model_error)


def test_channels_last_matches_float32(trained):
    unet, x, cond = trained
    fp32 = _round_trip(unet, x, cond)
    assert _relative(_round_trip(unet, x, cond, memory_format=torch.channels_last), fp32) < 1e-4


def test_final_eps_is_float32_under_autocast(trained):
    unet, x, cond = trained
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.dtype
        return hook

    hooks = [unet.out[2].register_forward_hook(record("out")),
             unet.input_blocks[0].register_forward_hook(record("first"))]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            unet(x, torch.full((len(x),), 500, dtype=torch.long), cond)
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"first": torch.bfloat16, "out": torch.float32}  # autocast everywhere but the last conv


def test_generate_stage_compiles_the_unet_only_when_configured():
    from dva.pipeline.config import EditJobConfig
    from dva.runtime.config import load_job_config
    from dva.pipeline.stages import GenerateStage

    def unet(compile_: bool):
        cfg = load_job_config(EditJobConfig, "local_tiny", ["random_weights=true", "input=in", "output=out",
                                                             f"generate.compile={compile_}"])
        return GenerateStage(cfg).model.unet

    assert isinstance(unet(True), torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(unet(False), torch._dynamo.eval_frame.OptimizedModule)


def test_unet_traces_to_one_graph_for_torch_compile(random_tiny_unet):
    """A graph break splits the compiled UNet and runs the rest eagerly (seen on torch 2.11 with an autocast probe)."""
    x, cond = torch.randn(2, 3, 32, 32), torch.randn(2, random_tiny_unet.cfg.embed_channels)
    t = torch.tensor([10, 500])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(random_tiny_unet)(x, t, cond)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
