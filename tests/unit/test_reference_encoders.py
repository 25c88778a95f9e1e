"""The reference encoders (IR-SE-50, MobileNetV2-GDConv, BiSeNet): key formats of the released files, the official
test vectors, and the errors a wrong or missing file gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from reference_vectors import VECTORS

from dva.errors import MissingWeightsError
from dva.models.config import EncoderConfig
from dva.models.encoders import build_encoder
from dva.models.reference import load_exact
from dva.models.reference.arcface import IRSE50, ArcFaceIdentityEncoder, arcface_crop
from dva.models.reference.bisenet import (
    BiSeNet,
    FaceParserMasker,
    build_face_parser,
    paste_mask,
    training_mask,
)
from dva.models.reference.landmarks import MobileNetLandmarkEncoder, landmark_input

needs_vectors = pytest.mark.usefixtures("official_vectors")


def _listed_keys(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) rows of a keys.txt listing, in file order."""
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        rows.append((key, tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())))
    return rows


def _module_keys(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


# ---------------------------------------------------------------- ArcFace IR-SE-50


@needs_vectors
def test_arcface_crop_reproduces_official_crop112():
    image = load_file(VECTORS / "id_net/input.safetensors")["image"].float()
    expected = load_file(VECTORS / "id_net/output.safetensors")["crop112"]
    crop = arcface_crop(image)
    assert crop.shape == (2, 3, 112, 112)
    assert (crop - expected).abs().max() <= 1e-6


def test_arcface_crop_pools_other_sizes_to_256_first():
    image = torch.rand(1, 3, 256, 256) * 2 - 1
    big = image.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 512, pools back to `image` exactly
    assert torch.allclose(arcface_crop(big), arcface_crop(image), atol=1e-6)


@needs_vectors
def test_irse50_keys_and_shapes_are_those_of_model_ir_se50():
    assert _module_keys(IRSE50()) == _listed_keys(VECTORS / "id_net/keys.txt")


@pytest.fixture(scope="module")
def irse50_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random IR-SE-50 saved as model_ir_se50.pth is: a plain state dict, no prefix."""
    torch.manual_seed(0)
    net = IRSE50().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):  # non-trivial statistics, so loading them matters
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_arcface_builder_loads_the_file_and_embeds(irse50_file):
    path, state = irse50_file
    encoder = build_encoder(
        EncoderConfig(kind="reference_arcface", dim=512, weights=str(path)), "model.identity_encoder", "identity"
    )
    assert isinstance(encoder, ArcFaceIdentityEncoder)
    loaded = encoder.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training  # frozen: BatchNorm keeps the file's statistics
    z = encoder(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert z.shape == (1, 512)
    assert torch.allclose(z.norm(dim=1), torch.ones(1), atol=1e-5)


def test_arcface_builder_missing_file_names_file_format_and_key(tmp_path):
    missing = tmp_path / "model_ir_se50.pth"
    cfg = EncoderConfig(kind="reference_arcface", dim=512, weights=str(missing))
    with pytest.raises(MissingWeightsError) as err:
        build_encoder(cfg, "model.identity_encoder", "identity")
    msg = str(err.value)
    assert str(missing) in msg and "model.identity_encoder.weights" in msg
    assert "input_layer.0.weight" in msg  # the expected key format


def test_arcface_builder_rejects_wrong_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"module.input_layer.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(MissingWeightsError) as err:
        build_encoder(EncoderConfig(kind="reference_arcface", weights=str(path)), "model.identity_encoder", "identity")
    msg = str(err.value)
    assert str(path) in msg and "model.identity_encoder.weights" in msg
    assert "missing" in msg and "unexpected" in msg and "body.0.res_layer.1.weight" in msg


class _NotATensor:
    """Pickled into a file to check that loading never runs arbitrary pickled objects."""


def test_weight_files_are_loaded_weights_only(tmp_path):
    path = tmp_path / "model_ir_se50.pth"
    torch.save({"input_layer.0.weight": _NotATensor()}, path)
    with pytest.raises(MissingWeightsError, match="cannot be read"):
        build_encoder(EncoderConfig(kind="reference_arcface", weights=str(path)), "model.identity_encoder", "identity")


def test_exact_load_accepts_files_without_batchnorm_counters_but_not_wrong_shapes():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    old_style = {k: torch.ones_like(v) for k, v in net.state_dict().items() if "num_batches_tracked" not in k}
    load_exact(net, old_style, path=Path("old.pth"), config_key="k", expected="E")
    assert torch.equal(net[1].running_var, torch.ones(4))
    old_style["0.weight"] = torch.ones(5, 3, 1, 1)
    with pytest.raises(MissingWeightsError, match=r"wrong shape in 1 keys \(e\.g\. 0\.weight \(5, 3, 1, 1\)"):
        load_exact(net, old_style, path=Path("old.pth"), config_key="k", expected="E")


# ---------------------------------------------------------------- MobileNetV2-GDConv landmarks


def _landmark_cfg(path: Path) -> EncoderConfig:
    return EncoderConfig(kind="reference_landmarks", dim=102, weights=str(path))


@needs_vectors
def test_landmark_encoder_reproduces_official_z_lnd():
    encoder = build_encoder(
        _landmark_cfg(VECTORS / "landmark_net/state_dict.safetensors"), "model.landmark_encoder", "landmark"
    )
    assert isinstance(encoder, MobileNetLandmarkEncoder)
    image = load_file(VECTORS / "landmark_net/input.safetensors")["image"].float()
    expected = load_file(VECTORS / "landmark_net/output.safetensors")
    with torch.no_grad():
        z_lnd = encoder(image)
        raw = encoder.backbone(landmark_input(image, encoder.normalize))
    assert z_lnd.shape == (2, 102)
    assert (z_lnd - expected["z_lnd"]).abs().max() <= 5e-5
    assert (raw - expected["raw136_preclamp"]).abs().max() <= 5e-5
    assert ((z_lnd == 0) | (z_lnd == 1)).any()  # the clamp is exercised


@needs_vectors
def test_landmark_encoder_loads_the_released_pth_tar_format(tmp_path):
    """The released file: {'state_dict': {'module.*': ...}} with the pretrain_net aliases and the unused classifier."""
    stored = load_file(VECTORS / "landmark_net/state_dict.safetensors")
    state = dict(stored)
    for key, value in stored.items():
        if key.startswith("module.base_net.0."):
            state["module.pretrain_net.features." + key.removeprefix("module.base_net.0.")] = value
    state["module.pretrain_net.classifier.1.weight"] = torch.randn(1000, 1280)
    state["module.pretrain_net.classifier.1.bias"] = torch.randn(1000)
    listed = {k for k, _ in _listed_keys(VECTORS / "landmark_net/keys.txt")}
    assert set(state) == listed
    path = tmp_path / "mobilenet_224_model_best_gdconv_external.pth.tar"
    torch.save({"epoch": 7, "arch": "mobilenetv2_gdconv", "state_dict": state, "best_prec1": 0.1}, path)

    encoder = build_encoder(_landmark_cfg(path), "model.landmark_encoder", "landmark")
    image = load_file(VECTORS / "landmark_net/input.safetensors")["image"].float()
    expected = load_file(VECTORS / "landmark_net/output.safetensors")["z_lnd"]
    with torch.no_grad():
        assert (encoder(image) - expected).abs().max() <= 5e-5


def test_landmark_encoder_rejects_malformed_files(tmp_path):
    not_a_dict = tmp_path / "list.pth.tar"
    torch.save([torch.zeros(3)], not_a_dict)
    with pytest.raises(MissingWeightsError, match="not a state dict of tensors"):
        build_encoder(_landmark_cfg(not_a_dict), "model.landmark_encoder", "landmark")

    truncated = tmp_path / "truncated.pth.tar"
    torch.save({"state_dict": {"module.linear1.conv.weight": torch.zeros(136, 1280, 1, 1)}}, truncated)
    with pytest.raises(MissingWeightsError) as err:
        build_encoder(_landmark_cfg(truncated), "model.landmark_encoder", "landmark")
    msg = str(err.value)
    assert str(truncated) in msg and "model.landmark_encoder.weights" in msg
    assert "missing" in msg and "module.base_net.0.*" in msg


# ---------------------------------------------------------------- BiSeNet face parser


@needs_vectors
def test_bisenet_keys_and_shapes_are_those_of_79999_iter():
    assert _module_keys(BiSeNet()) == _listed_keys(VECTORS / "bg_net_keys.txt")


def test_mask_class_sets():
    classes = torch.arange(19).view(1, 1, 19)
    assert set(torch.nonzero(~training_mask(classes))[:, 2].tolist()) == {0, 16, 18}
    assert set(torch.nonzero(~paste_mask(classes))[:, 2].tolist()) == {0, 7, 8, 14, 16, 17, 18}


def test_face_parser_builder_loads_file_and_masks_at_crop_size(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "79999_iter.pth"
    torch.save(BiSeNet().state_dict(), path)
    cfg = EncoderConfig(kind="bisenet", weights=str(path))
    masker = build_face_parser(cfg, "model.face_parser")
    paster = FaceParserMasker(paste=True, backbone=masker.backbone)

    crops = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        classes = masker.classes(crops)
        mask = masker(crops)
    assert classes.shape == (1, 64, 64) and classes.dtype == torch.int64
    assert 0 <= classes.min() and classes.max() < 19
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.bool
    assert torch.equal(mask, training_mask(classes))
    with torch.no_grad():
        assert torch.equal(paster(crops), paste_mask(classes))

    with pytest.raises(MissingWeightsError, match="cp.resnet.conv1.weight"):
        build_face_parser(EncoderConfig(kind="bisenet", weights=str(tmp_path / "absent.pth")), "model.face_parser")
