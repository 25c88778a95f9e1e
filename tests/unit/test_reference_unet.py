"""Our UNet and DDIM against vectors produced by the reference code (testvectors/official/unet_small), with the
model loaded as a user loads the authors' checkpoint: the vectors' EMA weights in a Lightning `.ckpt`, read by
`load_model` through the project's converter."""

import json

import pytest
import torch
from reference_vectors import SMALL, VECTORS
from safetensors.torch import load_file

from dva.config import load_config
from dva.diffusion import DDIMScheduler, ddim_generate, ddim_invert
from dva.runtime.weights import load_model
from dva.models.config import ModelConfig

pytestmark = pytest.mark.usefixtures("official_vectors")
UNET = VECTORS / "unet_small"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(model, inputs, z_face): the small reference UNet and its z_face linear, loaded by `load_model` from a
    Lightning checkpoint that holds the vectors' `ema_model.*` weights (float32, as the released file stores them);
    the frozen networks are not under test, so the landmark encoder is a random one and there is no face parser."""
    state = {k: v.float() for k, v in load_file(UNET / "state_dict.safetensors").items()}
    path = tmp_path_factory.mktemp("reference_unet") / "last.ckpt"
    torch.save({"state_dict": state}, path)
    cfg = load_config(ModelConfig, "reference256", [*SMALL, "landmark_encoder.kind=random", "face_parser=null",
                                                     f"checkpoint={path}"], group="model")
    conf = json.loads((UNET / "config.json").read_text())["model_conf"]
    assert {k: getattr(cfg.unet, k) for k in ("image_size", "model_channels", "channel_mult", "num_res_blocks",
                                              "attention_resolutions", "num_heads", "dropout", "embed_channels")} \
        == {k: conf[k] for k in ("image_size", "model_channels", "channel_mult", "num_res_blocks",
                                 "attention_resolutions", "num_heads", "dropout", "embed_channels")}
    model = load_model(cfg)
    inputs = load_file(UNET / "inputs.safetensors")
    with torch.no_grad():
        z_face = model.face_code(inputs["z_id"], inputs["z_lnd"])
    return model, inputs, z_face


def test_forward_matches_reference(reference):
    model, inputs, z_face = reference
    expected = load_file(UNET / "forward_outputs.safetensors")
    assert (z_face - expected["z_face"]).abs().max() < 1e-5
    with torch.no_grad():
        eps = model(inputs["x_t"], inputs["t"], z_face)
    assert (eps - expected["eps"]).abs().max() < 5e-5


def test_block_activations_match_reference(reference):
    model, inputs, z_face = reference
    debug = load_file(UNET / "forward_debug_activations.safetensors")
    seen = {}
    hooks = [b.register_forward_hook(lambda m, a, out, name=f"input_blocks.{i}": seen.__setitem__(name, out))
             for i, b in enumerate(model.unet.input_blocks)]
    hooks += [b.register_forward_hook(lambda m, a, out, name=f"output_blocks.{i}": seen.__setitem__(name, out))
              for i, b in enumerate(model.unet.output_blocks)]
    hooks.append(model.unet.middle_block.register_forward_hook(
        lambda m, a, out: seen.__setitem__("middle_block", out)))
    hooks.append(model.unet.time_embed.register_forward_hook(lambda m, a, out: seen.__setitem__("time_emb", out)))
    with torch.no_grad():
        model(inputs["x_t"], inputs["t"], z_face)
    for h in hooks:
        h.remove()
    assert torch.allclose(seen["time_emb"], debug["time_emb"], atol=1e-5)
    compared = 0
    for name, ref in debug.items():
        if name in ("time_emb", "t_sinusoid"):
            continue
        assert torch.allclose(seen[name][0].float(), ref.float(), rtol=2e-3, atol=1e-2), name
        compared += 1
    assert compared == 13


@pytest.mark.parametrize("n", [10, 20])
def test_ddim_matches_reference(reference, n):
    model, inputs, z_face = reference
    ref = load_file(UNET / "ddim_outputs.safetensors")
    sched = DDIMScheduler.create(n)
    assert list(sched.timesteps) == ref[f"T{n}.timestep_map"].tolist()
    assert abs(sched.alphas_cumprod - ref[f"T{n}.alphas_cumprod_f64"].numpy()).max() < 1e-15

    enc_states, enc_t = [], []
    x_t = ddim_invert(model, inputs["x0"], z_face, n,
                      callback=lambda i, t, x, x0: (enc_states.append(x), enc_t.append(t)))
    assert enc_t == ref[f"T{n}.encode_model_t"].tolist()
    assert (x_t - ref[f"T{n}.x_T"]).abs().max() < 2e-4
    assert (torch.stack(enc_states) - ref[f"T{n}.encode_sample_t"]).abs().max() < 2e-4

    dec_states, dec_x0, dec_t = [], [], []
    x0 = ddim_generate(model, ref[f"T{n}.x_T"], z_face, n,
                       callback=lambda i, t, x, xs: (dec_states.append(x), dec_x0.append(xs), dec_t.append(t)))
    assert dec_t == ref[f"T{n}.decode_model_t"].tolist()
    assert (x0 - ref[f"T{n}.x0_rec"]).abs().max() < 5e-4
    assert ((x0 + 1) / 2 - ref[f"T{n}.render_out01"]).abs().max() < 5e-4
    if n == 10:
        assert (torch.stack(dec_x0) - ref["T10.decode_xstart_t"]).abs().max() < 5e-3

    end_to_end = ddim_generate(model, x_t, z_face, n)
    assert (end_to_end - ref[f"T{n}.x0_rec"]).abs().max() < 3e-3


def test_one_teacher_forced_step_matches_reference(reference):
    model, _, z_face = reference
    ref = load_file(UNET / "ddim_outputs.safetensors")
    sched = DDIMScheduler.create(10)
    states = ref["T10.decode_sample_t"]
    worst = 0.0
    for k in range(1, 10):  # state k-1 → state k, at spaced index 9-k
        index = 9 - k
        t = torch.full((2,), sched.timesteps[index], dtype=torch.long)
        with torch.no_grad():
            x_prev, _ = sched.step(model(states[k - 1], t, z_face), index, states[k - 1])
        worst = max(worst, (x_prev - states[k]).abs().max().item())
    assert worst < 5e-5
