"""Stage B's UNet settings (`generate.*`): fused norms, torch.compile settings, cuDNN autotuning, the compile cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dva.errors import ConfigError
from dva.models.unet import GroupNorm32
from dva.pipeline.config import EditJobConfig, GenerateStageConfig
from dva.runtime.config import load_job_config
from dva.pipeline.fast_unet import prepare_unet

REPO = Path(__file__).resolve().parents[2]


def _job(*overrides: str) -> EditJobConfig:
    return load_job_config(EditJobConfig, "local_tiny", ["random_weights=true", "input=in", "output=out", *overrides])


@pytest.mark.parametrize("override, key", [
    ("generate.compile_mode=fastest", "generate.compile_mode"),
    ("generate.norm_kernels=cudnn", "generate.norm_kernels"),
    ("generate.compile_cache_dir=s3://bucket/cache", "generate.compile_cache_dir"),
])
def test_invalid_stage_b_settings_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _job(override)


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.compile, recording its keyword arguments (and still compiling)."""
    import torch._inductor.config as inductor_config

    calls = []
    real = torch.compile

    def recording(model, **kwargs):
        calls.append(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    monkeypatch.setattr(inductor_config, "coordinate_descent_tuning", inductor_config.coordinate_descent_tuning)
    return calls


def test_generate_stage_passes_its_compile_settings_to_torch_compile(compile_calls):
    import torch._inductor.config as inductor_config
    from dva.pipeline.stages import GenerateStage

    stage = GenerateStage(_job("generate.compile=true", "generate.compile_mode=max-autotune-no-cudagraphs",
                               "generate.compile_fullgraph=false", "generate.coordinate_descent_tuning=true"))
    assert isinstance(stage.model.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert compile_calls == [{"dynamic": False, "mode": "max-autotune-no-cudagraphs", "fullgraph": False}]
    assert inductor_config.coordinate_descent_tuning is True


def test_generate_stage_selects_the_fused_norms(interpreted_triton, monkeypatch):
    from dva.pipeline.stages import GenerateStage

    def fused_flags(*overrides):
        return {m.fused for m in GenerateStage(_job(*overrides)).model.unet.modules() if isinstance(m, GroupNorm32)}

    assert fused_flags() == {False}  # eager by default
    assert fused_flags("generate.norm_kernels=triton") == {True}
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ConfigError, match="generate.norm_kernels"):  # a CPU stage, not interpreted: refused
        fused_flags("generate.norm_kernels=triton")


@pytest.mark.parametrize("setting", [True, False])
def test_cudnn_benchmark_follows_the_setting_on_cuda_only(monkeypatch, setting):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not setting)
    prepare_unet(torch.nn.Identity(), GenerateStageConfig(cudnn_benchmark=setting), torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is (not setting)
    prepare_unet(torch.nn.Identity(), GenerateStageConfig(cudnn_benchmark=setting), torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is setting


COMPILE_IN_A_NEW_PROCESS = """
import json, sys, torch
from torch import nn
from torch._dynamo.utils import counters
from dva.models.unet import normalization
from dva.pipeline.config import GenerateStageConfig
from dva.pipeline.fast_unet import prepare_unet

torch.manual_seed(0)
module = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), normalization(32), nn.SiLU()).eval()
compiled = prepare_unet(module, GenerateStageConfig(compile=True, compile_cache_dir=sys.argv[1]), torch.device("cpu"))
with torch.no_grad():
    compiled(torch.randn(2, 3, 8, 8))
print(json.dumps(dict(counters["inductor"])))
"""


@pytest.mark.slow
def test_a_second_process_loads_the_compiled_graph_from_the_cache_dir(tmp_path):
    """Two actors (processes) compiling the same graph with `generate.compile_cache_dir`: the second loads the
    first one's result. On CPU Inductor builds C++ kernels, ≈ 30 s for the first process."""
    cache = tmp_path / "compile-cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)

    def compile_once() -> dict:
        proc = subprocess.run([sys.executable, "-c", COMPILE_IN_A_NEW_PROCESS, str(cache)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first = compile_once()
    assert first.get("fxgraph_cache_miss") == 1 and not first.get("fxgraph_cache_hit")
    assert any((cache / "fxgraph").rglob("*")), "the compiled graph was not written under the cache dir"
    second = compile_once()
    assert second.get("fxgraph_cache_hit") == 1 and not second.get("fxgraph_cache_miss")
