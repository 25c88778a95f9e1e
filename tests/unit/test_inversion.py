"""Inversion methods beside DDIM: the registry keeps `ddim` exact, fixed-point inversion converges, costs as stated."""

import pytest
import torch

from dva.diffusion import ddim_generate, ddim_invert
from dva.diffusion.inversion import InversionConfig, fixed_point_invert, invert
from dva.errors import ConfigError
from test_ddim import DATA_STD, gaussian_data_eps


def _data():
    g = torch.Generator().manual_seed(0)
    x0 = (torch.randn(4, 3, 16, 16, generator=g) * DATA_STD).clamp(-1, 1)
    return x0, torch.tensor([[0.0], [1.0], [-1.0], [0.5]])


def _round_trip_error(model, x0, cond, n, cfg):
    out = ddim_generate(model, invert(cfg, model, x0, cond, n), cond, n)
    return ((out - x0).norm() / x0.norm()).item()


def test_ddim_method_is_ddim_invert_bit_for_bit(random_tiny_unet):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    z = torch.randn(2, random_tiny_unet.cfg.embed_channels, generator=g)
    assert torch.equal(invert(InversionConfig(), random_tiny_unet, x0, z, 5), ddim_invert(random_tiny_unet, x0, z, 5))


def test_fixed_point_converges_to_an_exact_inverse():
    """On a smooth known ε the fixed point solves every generation step: the round trip returns x0 to float
    rounding at N=10, where DDIM inversion is off by tens of percent."""
    x0, cond = _data()
    ddim = _round_trip_error(gaussian_data_eps, x0, cond, 10, InversionConfig("ddim"))
    errors = [_round_trip_error(gaussian_data_eps, x0, cond, 10, InversionConfig("fixed_point", k))
              for k in (1, 2, 4, 8, 30)]
    assert ddim > 0.1
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] < ddim
    assert errors[-1] < 1e-5


def test_fixed_point_error_falls_with_iterations_on_the_tiny_unet(random_tiny_unet):
    g = torch.Generator().manual_seed(4)
    x0 = (torch.rand(2, 3, 32, 32, generator=g) * 1.6 - 0.8)
    z = torch.randn(2, random_tiny_unet.cfg.embed_channels, generator=g)
    ddim = _round_trip_error(random_tiny_unet, x0, z, 5, InversionConfig("ddim"))
    errors = [_round_trip_error(random_tiny_unet, x0, z, 5, InversionConfig("fixed_point", k)) for k in (1, 3, 10)]
    assert errors[0] < ddim
    assert errors[0] > errors[1] > errors[2], errors


@pytest.mark.parametrize("n,iterations", [(5, 1), (10, 3)])
def test_unet_calls_per_frame_are_as_documented(n, iterations):
    calls = []

    def model(x, t, c):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    cfg = InversionConfig("fixed_point", iterations)
    x_t = invert(cfg, model, torch.zeros(1, 3, 4, 4), torch.zeros(1, 1), n)
    assert len(calls) == cfg.inversion_calls(n) == n * iterations
    # every spaced step, from the cleanest, is solved with `iterations` evaluations at its own timestep
    step = 1000 // n
    assert calls == [j * step for j in range(n) for _ in range(iterations)]
    calls.clear()
    ddim_generate(model, x_t, torch.zeros(1, 1), n)
    assert len(calls) == n
    assert InversionConfig("ddim").inversion_calls(n) == n - 1


def test_callback_sees_each_solved_step():
    seen = []
    fixed_point_invert(gaussian_data_eps, torch.zeros(1, 3, 4, 4), torch.zeros(1, 1), 5, iterations=2,
                       callback=lambda i, t, x, x0: seen.append((i, t)))
    assert seen == [(0, 0), (1, 200), (2, 400), (3, 600), (4, 800)]


@pytest.mark.parametrize("cfg,key", [(InversionConfig("edict"), "inversion.method"),
                                     (InversionConfig("fixed_point", 0), "inversion.iterations")])
def test_bad_settings_name_their_key(cfg, key):
    with pytest.raises(ConfigError, match=key):
        cfg.validate("inversion")


def test_labels_tell_methods_and_settings_apart():
    assert InversionConfig().label == "ddim"
    assert InversionConfig("fixed_point", 3).label != InversionConfig("fixed_point", 2).label


def _job(*overrides):
    from dva.pipeline.config import EditJobConfig
    from dva.runtime.config import load_job_config

    return load_job_config(EditJobConfig, "local_tiny", ["random_weights=true", "input=/in", "output=/out",
                                                         *overrides])


def test_edit_job_reads_and_validates_the_inversion_setting():
    cfg = _job("inversion.method=fixed_point", "inversion.iterations=2")
    assert (cfg.inversion.method, cfg.inversion.iterations) == ("fixed_point", 2)
    with pytest.raises(ConfigError, match=r"inversion\.method"):
        _job("inversion.method=edict")
    with pytest.raises(ConfigError, match=r"clip_edit\.inversion\.iterations"):
        _job("clip_edit.inversion.iterations=0")


def test_stored_latents_are_keyed_by_the_inversion_method_and_its_settings():
    from dva.pipeline.stages import latent_key

    keys = {latent_key(_job(*o)) for o in ([], ["inversion.method=fixed_point", "inversion.iterations=2"],
                                           ["inversion.method=fixed_point", "inversion.iterations=3"])}
    assert len(keys) == 3
    # `ddim` leaves the key as it was before methods existed, so earlier stored latents stay valid
    assert latent_key(_job()) == latent_key(_job("inversion.iterations=7"))


def test_eval_reads_and_validates_the_inversion_setting(tmp_path):
    from dva.evaluation.config import load_eval_config

    paths = ["random_weights=true", f"input={tmp_path}", f"output={tmp_path}"]
    cfg = load_eval_config("local_tiny", [*paths, "inversion.method=fixed_point"])
    assert cfg.inversion.label == "fixed_point×2"
    with pytest.raises(ConfigError, match=r"inversion\.method"):
        load_eval_config("local_tiny", [*paths, "inversion.method=exact"])
