"""CLIP-guided directions with a tiny random open_clip model (loaded through open_clip's local-file path) and a
micro DVA: the loop lowers its loss, the ID term stays within Adam's reach, the file is reusable and cached."""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import dva.editing.clip_direction as clip_direction
from dva.config import merge_config
from dva.editing import EditDirection, apply_direction, identity_encoder_id, l2norm, load_clip_edit_config
from dva.editing.clip_direction import (
    TINY_CLIP,
    ClipEditConfig,
    ClipModelConfig,
    load_clip,
    optimise_clip_direction,
    register_tiny_clip,
)
from dva.errors import ConfigError, DvaError, MissingWeightsError
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.config import ModelConfig

MICRO = [  # a DVA of 16² crops, ≈40 k UNet parameters: one CLIP iteration in tens of milliseconds
    "unet.image_size=16", "unet.model_channels=8", "unet.channel_mult=[1,2]", "unet.attention_resolutions=[8]",
    "unet.embed_channels=64", "z_face_dim=64", "identity_encoder.dim=64", "unet.dropout=0.0",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors gain nothing from threads, and on a busy 2-core machine two threads spin-wait for 100× longer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def micro_model():
    cfg = merge_config(ModelConfig, [], MICRO)
    torch.manual_seed(0)
    model = DiffusionVideoAutoencoder(cfg).eval()
    with torch.no_grad():  # every weight random, zero-initialised output layers included, so z_id reaches ε
        for p in model.unet.parameters():
            p.copy_(torch.randn_like(p) / max(1, p[0].numel()) ** 0.5)
    return model


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    """A random tiny CLIP architecture, saved as a weight file the way released weights are."""
    import open_clip

    register_tiny_clip()
    torch.manual_seed(1)
    model, _, _ = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "open_clip_model.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return str(path), state


def edit_config(clip_weights, tmp_path, **kw) -> ClipEditConfig:
    kw.setdefault("output_prefix", str(tmp_path))
    return ClipEditConfig(clip=ClipModelConfig(name=TINY_CLIP, weights=clip_weights[0]), **kw)


def frames(n=3, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_clip_loads_from_a_local_file_only(clip_weights, tmp_path):
    path, state = clip_weights
    loss = load_clip(ClipModelConfig(name=TINY_CLIP, weights=path), ["a photo of a {}."])
    loaded = loss.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())

    with pytest.raises(MissingWeightsError, match="edit.clip.weights"):
        load_clip(ClipModelConfig(name="ViT-B-16", weights=str(tmp_path / "none.bin")), ["{}"], config_key="edit.clip")
    with pytest.raises(MissingWeightsError, match="clip.weights"):
        load_clip(ClipModelConfig(name="ViT-B-16", weights=None), ["{}"])
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not weights" * 8)
    with pytest.raises(MissingWeightsError, match="cannot be loaded as open_clip dva-tiny-clip weights"):
        load_clip(ClipModelConfig(name=TINY_CLIP, weights=str(junk)), ["{}"])
    with pytest.raises(ConfigError, match="unknown open_clip architecture 'ViT-Q-99'"):
        load_clip(ClipModelConfig(name="ViT-Q-99", weights=path), ["{}"])


def openai_archive(state: dict, path) -> str:
    """A stand-in for OpenAI's own CLIP file (`ViT-B-16.pt`): a TorchScript archive whose state dict holds the
    weights in float16 under open_clip's key names plus OpenAI's three hyper-parameter entries."""
    from torch import nn

    state = {**{k: v.half() if v.is_floating_point() else v for k, v in state.items()},
             "input_resolution": torch.tensor(32), "context_length": torch.tensor(32),
             "vocab_size": torch.tensor(49408)}
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, nn.Module())
            module = getattr(module, name)
        module.register_buffer(leaf, value)
    torch.jit.script(root).save(str(path))
    return str(path)


def activations(model) -> set[str]:
    from open_clip.transformer import QuickGELU

    return {type(m).__name__ for m in model.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}


def test_activation_matches_the_weights_origin(clip_weights, tmp_path):
    """OpenAI trained CLIP with QuickGELU; open_clip's plain architectures use GELU. (No real open_clip architecture
    is small: the smallest, ViT-S-32, has ≈50 M parameters, so the tiny one stands in for both kinds of file.)"""
    import open_clip

    path, state = clip_weights
    plain = load_clip(ClipModelConfig(name=TINY_CLIP, weights=path), ["{}"])
    assert activations(plain.model) == {"GELU"}  # an open_clip file: the architecture's own activation

    archive = openai_archive(state, tmp_path / "ViT-B-16.pt")
    openai = load_clip(ClipModelConfig(name=TINY_CLIP, weights=archive), ["{}"])
    assert activations(openai.model) == {"QuickGELU"}  # recognised as OpenAI's: QuickGELU whatever the name
    loaded = openai.model.state_dict()
    assert all(torch.equal(loaded[k], v.half().float() if v.is_floating_point() else v) for k, v in state.items())
    tokens = openai.tokenizer(["a face"])
    assert not torch.allclose(openai.model.encode_text(tokens), plain.model.encode_text(tokens), atol=1e-3)

    # The default architecture is OpenAI's ViT-B/16 as the paper used it, built with QuickGELU.
    assert open_clip.get_model_config(ClipModelConfig().name)["quick_gelu"] is True
    assert open_clip.get_model_config(load_clip_edit_config().clip.name)["quick_gelu"] is True


def test_preprocessing_matches_open_clips_own_transform(clip_weights):
    import open_clip

    loss = load_clip(ClipModelConfig(name=TINY_CLIP, weights=clip_weights[0]), ["{}"])
    _, _, transform = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None)
    rgb = np.array(Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
                   .resize((100, 100), Image.BICUBIC))
    expected = transform(Image.fromarray(rgb))
    ours = loss.preprocess(torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 127.5 - 1)[0]
    assert ours.shape == expected.shape == (3, 32, 32)
    assert (ours - expected).abs().mean() < 0.01  # PIL rounds to uint8 after resizing; we do not


def test_text_direction_is_the_normalised_mean_over_templates(clip_weights):
    templates = ["a photo of a {}.", "a drawing of a {}."]
    loss = load_clip(ClipModelConfig(name=TINY_CLIP, weights=clip_weights[0]), templates)
    d = loss.text_direction("face", "face with beard")
    assert d.norm().item() == pytest.approx(1.0, abs=1e-5)

    def embed(text):
        return l2norm(loss.model.encode_text(loss.tokenizer([text])).float())[0]

    manual = sum(embed(t.format("face with beard")) - embed(t.format("face")) for t in templates)
    assert torch.allclose(d, l2norm(manual), atol=1e-5)


def adam_reach(lr, iterations, beta1=0.9, beta2=0.999):
    """Largest total move of one coordinate after `iterations` Adam steps, for any gradients.

    Step t is lr·m̂/√v̂. By Cauchy–Schwarz, |Σ β1^k g_k| ≤ √(Σ (β1²/β2)^k) · √(Σ β2^k g_k²), so
    |m̂/√v̂| ≤ (1−β1)/(1−β1^t) · √((1−β2^t)/(1−β2)) · √(Σ_{k<t} (β1²/β2)^k).
    """
    total = 0.0
    for t in range(1, iterations + 1):
        geometric = sum((beta1 ** 2 / beta2) ** k for k in range(t))
        total += (1 - beta1) / (1 - beta1 ** t) * math.sqrt((1 - beta2 ** t) / (1 - beta2) * geometric)
    return lr * total


def test_optimisation_lowers_the_loss_keeps_id_in_bound_and_caches(micro_model, clip_weights, tmp_path, monkeypatch):
    cfg = edit_config(clip_weights, tmp_path, iterations=30, frames=[0, 2])
    seen = []
    result = optimise_clip_direction(micro_model, frames(), "face", "face with beard", cfg, source_id="clip-a",
                                     on_iteration=lambda i, losses: seen.append(losses))
    assert not result.from_cache and len(seen) == 30
    losses = result.direction.losses
    total, cos = losses["total"], losses["cos"]
    # Iteration 0 compares the states with themselves (Δ = 0: no ID or L1 cost, and no image direction yet).
    assert losses["id"][0].item() == pytest.approx(0.0, abs=1e-6)
    assert total[-1] < 0.8 * total[0] and total[-1] < total[1]
    assert cos[-1] > cos[1] > cos[0]

    # ID term: ‖z_opt − z_start‖ ≤ √d·reach, and sin∠(z_opt, z_start) ≤ that / ‖z_start‖, so
    # 1 − cos ≤ 1 − √(1 − r²) with r the relative move.
    delta, z_start = result.direction.delta, result.direction.z_start
    reach = adam_reach(cfg.lr, cfg.iterations)
    assert delta.abs().max() <= reach + 1e-6
    r = math.sqrt(delta.numel()) * reach / z_start.norm().item()
    bound = 1 - math.sqrt(1 - r ** 2)
    final_id = 1 - torch.nn.functional.cosine_similarity(z_start + delta, z_start, dim=0).item()
    assert 0 < final_id <= bound and max(losses["id"]).item() <= bound
    expected_start = micro_model.encode_identity(frames()[[0, 2]]).mean(0)
    assert torch.allclose(z_start, expected_start, atol=1e-6)

    # The file is reusable: any job can load it and apply it to this model's identity encoder only.
    direction = EditDirection.load(result.uri)
    assert torch.equal(direction.delta, delta)
    assert direction.metadata["target"] == "face with beard" and direction.metadata["source_id"] == "clip-a"
    assert direction.losses["total"].shape == (30,)
    encoder = identity_encoder_id(micro_model)
    z_bar = micro_model.encode_identity(frames()).mean(0)
    assert torch.allclose(apply_direction(z_bar, direction, 0.5, encoder_id=encoder), l2norm(z_bar + 0.5 * delta))
    assert torch.equal(apply_direction(z_bar, direction, 0.0, encoder_id=encoder), l2norm(z_bar))
    with pytest.raises(DvaError, match="insightface_arcface:64:x.*random:64:-|random:64:-.*insightface_arcface"):
        apply_direction(z_bar, direction, 0.5, encoder_id="insightface_arcface:64:x")

    # The same request again reads the cache: neither CLIP nor the optimiser runs.
    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached direction should have been read")

    monkeypatch.setattr(clip_direction, "_optimise", must_not_run)
    monkeypatch.setattr(clip_direction, "load_clip", must_not_run)
    again = optimise_clip_direction(micro_model, frames(), "face", "face with beard", cfg, source_id="clip-a")
    assert again.from_cache and again.uri == result.uri and torch.equal(again.direction.delta, delta)
    # Another prompt, setting or source is another key.
    for changed in (dict(target="face with glasses"), dict(cfg=edit_config(clip_weights, tmp_path, iterations=31,
                                                                            frames=[0, 2])),
                    dict(source_id="clip-b")):
        args = dict(target="face with beard", cfg=cfg, source_id="clip-a") | changed
        with pytest.raises(AssertionError, match="cached direction"):
            optimise_clip_direction(micro_model, frames(), "face", args["target"], args["cfg"],
                                    source_id=args["source_id"])


def test_the_cache_follows_the_clip_weights_bytes_not_their_location(micro_model, clip_weights, tmp_path):
    """CLIP weights replaced at the same path give another key, so a direction optimised with the old ones is never
    read; the same bytes at another path give the same key."""
    weights = tmp_path / "clip.safetensors"
    shutil.copy(clip_weights[0], weights)
    cfg = ClipEditConfig(clip=ClipModelConfig(name=TINY_CLIP, weights=str(weights)), iterations=2, frames=[0],
                         output_prefix=str(tmp_path / "directions"))

    def optimise(cfg):
        return optimise_clip_direction(micro_model, frames(), "face", "face with beard", cfg, source_id="clip-a")

    first = optimise(cfg)
    moved = tmp_path / "moved.safetensors"
    shutil.copy(weights, moved)
    elsewhere = optimise(dataclasses.replace(cfg, clip=dataclasses.replace(cfg.clip, weights=str(moved))))
    assert elsewhere.from_cache and elsewhere.uri == first.uri
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in clip_weights[1].items()}, str(weights))
    replaced = optimise(cfg)
    assert not replaced.from_cache and replaced.uri != first.uri


def test_mask_limits_the_l1_term(micro_model, clip_weights, tmp_path):
    mask = torch.zeros(1, 1, 16, 16)
    cfg = edit_config(clip_weights, tmp_path, iterations=3, output_prefix=None)
    result = optimise_clip_direction(micro_model, frames(), "face", "old face", cfg, mask=mask)
    assert result.uri is None and torch.all(result.direction.losses["l1"] == 0)


def test_config_takes_float_weights_and_names_bad_keys(micro_model):
    cfg = load_clip_edit_config(overrides=["loss_weights.clip=2.5", "loss_weights.id=1", "lr=0.01"])
    assert cfg.loss_weights.clip == 2.5 and isinstance(cfg.loss_weights.id, float) and cfg.loss_weights.l1 == 5.0
    assert cfg.iterations == 2000 and cfg.steps == 5 and cfg.frames == [0] and cfg.clip.name == "ViT-B-16-quickgelu"
    with pytest.raises(ConfigError, match="loss_weights.l1"):
        load_clip_edit_config(overrides=["loss_weights.l1=-1"])
    with pytest.raises(ConfigError, match="templates"):
        load_clip_edit_config(overrides=["templates=[a photo]"])
    with pytest.raises(ConfigError, match="precision"):
        load_clip_edit_config(overrides=["precision=fp8"])
    with pytest.raises(ConfigError, match="frames"):
        optimise_clip_direction(micro_model, frames(2), "a", "b", ClipEditConfig(frames=[5]))
