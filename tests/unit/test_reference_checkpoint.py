"""Running the released reference checkpoint (a PyTorch Lightning .ckpt) in dva: the key map against the official
full-size listing, conversion with `dva convert-reference`, direct loading, and the errors a wrong file gives.

The Lightning files here are built by the tests in the released format: the official small-UNet test vectors as the
EMA half, a perturbed copy as the raw half, the official landmark-net vectors and a random BiSeNet as the frozen
networks, and beside the weights the entries Lightning 1.4 writes (epoch, callback states keyed by class, ...).
"""

from __future__ import annotations

import argparse
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from reference_vectors import SMALL, VECTORS

from dva.cli import main
from dva.config import load_config
from dva.errors import MissingWeightsError
from dva.models.checkpoint import load_model
from dva.models.config import ModelConfig
from dva.models.reference.bisenet import BiSeNet, FaceParserMasker
from dva.models.reference.convert import convert, map_reference_keys, meta_model
from dva.runtime.cli import EXIT_USAGE

pytestmark = pytest.mark.usefixtures("official_vectors")
LANDMARK_FILE = "mobilenet_224_model_best_gdconv_external.pth.tar"


def _listing(path: Path) -> dict[str, tuple[int, ...]]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")[:2]
            rows[key] = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
    return rows


def test_full_reference_listing_maps_onto_reference256_on_meta():
    listing = _listing(VECTORS / "unet_full_keys.txt")
    assert len(listing) == 3972
    model = meta_model(load_config(ModelConfig, "reference256", group="model"))
    assert all(v.is_meta for v in model.state_dict().values())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for half in ("model.", "ema_model."):
        mapped, unknown = map_reference_keys({k.removeprefix(half): v for k, v in listing.items()
                                              if k.startswith(half)})
        assert unknown == []
        assert mapped == expected  # every key, every shape; nothing missing, nothing left over
    assert sum(k.startswith("unet.") for k in expected) == 758 and expected["z_face.weight"] == (512, 614)


def _fake_class(qualified: str, bases: tuple = ()) -> type:
    """A class importable as `qualified` (its modules registered in sys.modules) so torch.save can name it."""
    module_name, name = qualified.rsplit(".", 1)
    parts = module_name.split(".")
    for i in range(len(parts)):
        sys.modules.setdefault(".".join(parts[: i + 1]), types.ModuleType(".".join(parts[: i + 1])))
    cls = type(name, bases, {"__module__": module_name})
    setattr(sys.modules[module_name], name, cls)
    return cls


def _save_lightning(path: Path, state: dict, tmp: Path) -> Path:
    """`state` as Lightning 1.4 saves a checkpoint: beside it, callback states keyed by a callback class and a dict
    subclass and an object for hyper-parameters, none of which `weights_only` loading may import."""
    before = set(sys.modules)
    try:
        checkpoint_cls = _fake_class("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")
        attribute_dict = _fake_class("lightning_fabric.utilities.data.AttributeDict", (dict,))
        torch.save({
            "epoch": 41, "global_step": 1_000_000, "pytorch-lightning_version": "1.4.5",
            "state_dict": OrderedDict(state),
            "callbacks": {checkpoint_cls: {"best_model_score": torch.tensor(0.1), "dirpath": str(tmp)}},
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]}],
            "lr_schedulers": [], "hparams_name": "conf",
            "hyper_parameters": attribute_dict(name="diffusion_video_autoencoder", fp16=True, T=1000),
            "hparams": argparse.Namespace(lr=1e-4, batch_size=16),
        }, path)
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Paths and tensors of: a full-format .ckpt, the same without frozen networks, and a folder of encoder files."""
    tmp = tmp_path_factory.mktemp("reference_ckpt")
    unet = load_file(VECTORS / "unet_small/state_dict.safetensors")
    ema = {k.removeprefix("ema_model."): v.float() for k, v in unet.items()}
    raw = {k: v + 0.01 for k, v in ema.items()}  # the raw weights: anything but the EMA ones
    # The landmark net as the reference registers it: features twice, plus the unused 1000-way classifier.
    landmark_file = load_file(VECTORS / "landmark_net/state_dict.safetensors")
    landmark = {k.removeprefix("module."): v for k, v in landmark_file.items()}
    landmark |= {k.replace("base_net.0.", "pretrain_net.features."): v for k, v in landmark.items() if "base_net" in k}
    landmark |= {"pretrain_net.classifier.1.weight": torch.zeros(1000, 1280),
                 "pretrain_net.classifier.1.bias": torch.zeros(1000)}
    torch.manual_seed(1)
    bisenet = BiSeNet().state_dict()
    frozen = {f"encoder.lndnet.backbone.{k}": v for k, v in landmark.items()}
    frozen |= {f"encoder.bgnet.backbone.{k}": v for k, v in bisenet.items()}
    halves = {f"ema_model.{k}": v for k, v in ema.items()} | {f"model.{k}": v for k, v in raw.items()}
    full = _save_lightning(tmp / "last.ckpt", halves | {f"{h}{k}": v for k, v in frozen.items()
                                                        for h in ("model.", "ema_model.")}, tmp)
    bare = _save_lightning(tmp / "bare.ckpt", halves, tmp)
    # The separate files hold other landmark weights than the checkpoint, so the test can tell which was used.
    encoders = tmp / "encoders"
    encoders.mkdir()
    shifted = {k: v + 0.5 if k == "linear1.bn.bias" else v for k, v in landmark.items() if "pretrain" not in k}
    torch.save({"state_dict": {f"module.{k}": v for k, v in shifted.items()}}, encoders / LANDMARK_FILE)
    torch.save(bisenet, encoders / "79999_iter.pth")
    return {"full": full, "bare": bare, "encoders": encoders, "ema": ema, "raw": raw, "shifted": shifted,
            "bisenet": bisenet, "tmp": tmp}


def _eps_error(model) -> float:
    inputs = load_file(VECTORS / "unet_small/inputs.safetensors")
    expected = load_file(VECTORS / "unet_small/forward_outputs.safetensors")
    with torch.no_grad():
        z_face = model.face_code(inputs["z_id"], inputs["z_lnd"])
        assert (z_face - expected["z_face"]).abs().max() < 1e-5
        return (model(inputs["x_t"], inputs["t"], z_face) - expected["eps"]).abs().max().item()


def _z_lnd_error(model) -> float:
    image = load_file(VECTORS / "landmark_net/input.safetensors")["image"].float()
    expected = load_file(VECTORS / "landmark_net/output.safetensors")["z_lnd"]
    return (model.encode_landmarks(image) - expected).abs().max().item()


def test_cli_converts_ema_weights_and_encoders_from_the_checkpoint(reference, capsys):
    out = reference["tmp"] / "ema" / "dva_ref.safetensors"
    argv = ["convert-reference", "--ckpt", str(reference["full"]), "--encoders", str(reference["encoders"]),
            "--out", str(out), *SMALL]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "landmark_encoder: from checkpoint" in printed and "face_parser: from checkpoint" in printed
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["weights"] == "ema"

    cfg = load_config(ModelConfig, out.with_suffix(".yaml"))  # the config written beside the checkpoint
    assert cfg.checkpoint == str(out.resolve()) and cfg.landmark_encoder.weights is None
    model = load_model(cfg)
    assert _eps_error(model) < 5e-5
    # E_lnd is the checkpoint's (the official vectors' weights), not the shifted separate file in --encoders.
    assert _z_lnd_error(model) < 5e-5
    assert isinstance(model.face_parser, FaceParserMasker)
    parser_state = model.face_parser.backbone.state_dict()
    assert all(torch.equal(parser_state[k].float(), v.float()) for k, v in reference["bisenet"].items())


def test_lightning_checkpoint_loads_directly_with_ema_or_raw_weights(reference):
    overrides = [*SMALL, f"checkpoint={reference['full']}"]
    model = load_model(load_config(ModelConfig, "reference256", overrides, group="model"))
    assert _eps_error(model) < 5e-5

    raw = load_model(load_config(ModelConfig, "reference256", [*overrides, "use_ema=false"], group="model"))
    assert torch.equal(raw.z_face.weight, reference["raw"]["encoder.linear.weight"])
    assert torch.equal(raw.unet.out[2].bias, reference["raw"]["out.2.bias"])
    assert not torch.equal(raw.unet.out[2].bias, model.unet.out[2].bias)


def test_cli_raw_flag_and_encoders_from_separate_files(reference, capsys):
    out = reference["tmp"] / "raw" / "dva_ref.safetensors"
    argv = ["convert-reference", "--ckpt", str(reference["bare"]), "--encoders", str(reference["encoders"]),
            "--out", str(out), "--raw", *SMALL]
    assert main(argv) == 0
    assert f"landmark_encoder: from {reference['encoders'] / LANDMARK_FILE}" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["weights"] == "raw"
    model = load_model(load_config(ModelConfig, out.with_suffix(".yaml")))
    assert torch.equal(model.z_face.bias, reference["raw"]["encoder.linear.bias"])
    assert torch.equal(model.landmark_encoder.backbone.linear1.bn.bias, reference["shifted"]["linear1.bn.bias"])


def _assert_names(err: MissingWeightsError, path, config_key: str) -> None:
    msg = str(err)
    assert str(path) in msg and f"`{config_key}`" in msg
    assert "ema_model.<key>" in msg  # the expected key format


def _write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


@pytest.mark.parametrize("content, says", [
    (None, "does not exist"),
    (b"epoch: 41\nnot a checkpoint\n", "cannot be read"),
    (torch.zeros(3), "no `state_dict` entry"),
    ({"state_dict": {"model.input_blocks.0.0.weight": torch.zeros(1)}}, "no `ema_model.*` keys"),
    ({"state_dict": {"ema_model.encoder.mystery.weight": torch.zeros(1)}}, "outside the reference layout"),
], ids=["missing", "not-a-checkpoint", "no-state-dict", "no-ema-half", "unknown-key"])
def test_bad_checkpoint_files_name_file_format_and_config_key(tmp_path, content, says):
    path = tmp_path / "last.ckpt"
    if content is not None:
        _write(path, content)
    cfg = load_config(ModelConfig, "reference256", [*SMALL, f"checkpoint={path}"], group="model")
    with pytest.raises(MissingWeightsError, match=says) as err:
        load_model(cfg)
    _assert_names(err.value, path, "model.checkpoint")
    with pytest.raises(MissingWeightsError, match=says) as err:
        convert(str(path), tmp_path / "out.safetensors", cfg)
    _assert_names(err.value, path, "--ckpt")


def test_checkpoint_of_another_size_or_without_encoders_is_refused(reference, tmp_path, capsys):
    # The small checkpoint against the full-size reference256: every wrong shape is caught before anything is written.
    with pytest.raises(MissingWeightsError, match="wrong shapes") as err:
        convert(str(reference["full"]), tmp_path / "out.safetensors",
                load_config(ModelConfig, "reference256", ["identity_encoder.kind=random"], group="model"))
    _assert_names(err.value, reference["full"], "--ckpt")
    assert not (tmp_path / "out.safetensors").exists()
    # No frozen networks in the checkpoint and no --encoders: the error says which file to supply.
    argv = ["convert-reference", "--ckpt", str(reference["bare"]), "--out", str(tmp_path / "o.safetensors"), *SMALL]
    assert main(argv) == EXIT_USAGE  # was 1 before the common CLI
    err = capsys.readouterr().err
    assert str(reference["bare"]) in err and "landmark_encoder" in err and LANDMARK_FILE in err
