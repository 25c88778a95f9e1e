"""Attribute classifiers on z_id: training, the SPEC edit, the artefact file, CelebA annotations, images → z_id."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from dva.editing import (
    AttributeClassifier,
    apply_classifier_edit,
    embed_images,
    identity_encoder_id,
    l2norm,
    parse_celeba_attributes,
    train_attribute_classifier,
    train_classifier_from_annotations,
)
from dva.errors import DvaError

ENCODER = "random:64:-"


def labelled_set(n=4000, d=64, seed=0):
    """Unit z_ids of many identities; each attribute is the sign of a projection on a hidden direction, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    z = l2norm(torch.randn(n, d, generator=gen) * torch.linspace(0.5, 1.5, d) + 0.3)
    hidden = torch.randn(2, d, generator=gen)
    proj = (z - z.mean(0)) @ hidden.T
    noisy = proj + 0.02 * proj.std(0) * torch.randn(proj.shape, generator=gen)
    return z, (noisy > 0).float(), hidden


@pytest.fixture(scope="module")
def trained():
    z, labels, hidden = labelled_set()
    return z, labels, train_attribute_classifier(z, labels, ["Smiling", "Young"], encoder_id=ENCODER)


def test_classifier_learns_a_hidden_attribute(trained):
    _, _, clf = trained
    assert set(clf.heldout_accuracy) == {"Smiling", "Young"}
    assert min(clf.heldout_accuracy.values()) >= 0.95, clf.heldout_accuracy
    assert clf.metadata["n_heldout"] == "400"


def test_edit_moves_the_logit_monotonically_and_s0_is_the_normalised_mean(trained):
    z, _, clf = trained
    z_mean = z[:8].mean(0)  # one "video": its frames' mean, not unit length
    logits = [clf.logits(apply_classifier_edit(z_mean, clf, {"Smiling": s}, encoder_id=ENCODER)[None])[0, 0]
              for s in np.linspace(-2, 2, 9)]
    assert all(b > a for a, b in zip(logits, logits[1:])), logits
    assert logits[-1] - logits[0] > 5

    assert torch.equal(apply_classifier_edit(z_mean, clf, {"Smiling": 0.0}, encoder_id=ENCODER), l2norm(z_mean))
    assert torch.equal(apply_classifier_edit(z_mean, clf, {}, encoder_id=ENCODER), l2norm(z_mean))


def test_edit_is_the_spec_formula(trained):
    z, _, clf = trained
    z_mean, d = z[:8].mean(0), clf.dim
    w_s, w_y = clf.weight[0], clf.weight[1]
    zhat = (z_mean - clf.mu) / clf.sigma
    zhat = zhat + 1.5 * math.sqrt(d) * w_s / w_s.norm() - 1.0 * math.sqrt(d) * w_y / w_y.norm()
    expected = l2norm(clf.sigma * zhat + clf.mu)
    got = apply_classifier_edit(z_mean, clf, {"Smiling": 1.5, "Young": -1}, encoder_id=ENCODER)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got.norm().item() == pytest.approx(1.0, abs=1e-6)
    batch = apply_classifier_edit(z[:3], clf, {"Smiling": 1.5, "Young": -1}, encoder_id=ENCODER)
    assert batch.shape == (3, d)


def test_bad_attribute_lists_the_valid_ones_and_other_encoder_is_refused(trained):
    z, _, clf = trained
    with pytest.raises(DvaError, match="unknown attribute 'Smilng'.*valid attributes: Smiling, Young"):
        apply_classifier_edit(z[0], clf, {"Smilng": 1.0}, encoder_id=ENCODER)
    with pytest.raises(DvaError) as err:
        apply_classifier_edit(z[0], clf, {"Smiling": 1.0}, encoder_id="insightface_arcface:64:abc")
    assert ENCODER in str(err.value) and "insightface_arcface:64:abc" in str(err.value)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_artefact_round_trip(trained, tmp_path, where):
    z, _, clf = trained
    uri = str(tmp_path / "clf" / "celeba.safetensors") if where == "local" else "memory://dva-test/clf.safetensors"
    clf.save(uri)
    back = AttributeClassifier.load(uri)
    assert back.names == clf.names and back.encoder_id == ENCODER
    assert back.heldout_accuracy == clf.heldout_accuracy
    for name in ("weight", "bias", "mu", "sigma"):
        assert torch.equal(getattr(back, name), getattr(clf, name))
    assert torch.equal(apply_classifier_edit(z[0], back, {"Young": 2}, encoder_id=ENCODER),
                       apply_classifier_edit(z[0], clf, {"Young": 2}, encoder_id=ENCODER))
    with pytest.raises(DvaError, match="unknown attribute.*" + uri.split("/")[-1]):
        back.index("Bald")


def test_concurrent_saves_of_one_artefact_leave_one_whole_file(trained, tmp_path):
    _, _, clf = trained
    uri = str(tmp_path / "clf.safetensors")
    with ThreadPoolExecutor(8) as pool:  # workers caching the same artefact: none may clobber another's temporary
        list(pool.map(lambda _: clf.save(uri), range(48)))
    assert torch.equal(AttributeClassifier.load(uri).weight, clf.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["clf.safetensors"]


def test_not_a_classifier_file_is_named(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"junk" * 10)
    with pytest.raises(DvaError, match="x.safetensors"):
        AttributeClassifier.load(str(path))


def test_identity_encoder_id_follows_kind_dim_and_weights(tiny_config, tmp_path):
    assert identity_encoder_id(tiny_config) == "random:128:-"
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"abc")
    tiny_config.identity_encoder.kind, tiny_config.identity_encoder.weights = "insightface_arcface", str(weights)
    assert identity_encoder_id(tiny_config) == (
        "insightface_arcface:128:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


CELEBA = """3
5_o_Clock_Shadow Smiling Young
000001.png -1  1  1
000002.png  1 -1  1
000003.png -1 -1 -1
"""


def test_parse_celeba_attributes(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(CELEBA)
    table = parse_celeba_attributes(str(path))
    assert table.names == ["5_o_Clock_Shadow", "Smiling", "Young"]
    assert table.filenames == ["000001.png", "000002.png", "000003.png"]
    assert table.labels.tolist() == [[0, 1, 1], [1, 0, 1], [0, 0, 0]]

    path.write_text(CELEBA.replace("000002.png  1 -1  1", "000002.png  1 -1"))
    with pytest.raises(DvaError, match="line 4"):
        parse_celeba_attributes(str(path))
    path.write_text(CELEBA.replace("3\n", "4\n", 1))
    with pytest.raises(DvaError, match="says 4 images but 3"):
        parse_celeba_attributes(str(path))


def test_images_to_z_id_with_aligner_and_training_from_annotations(tmp_path, tiny_model):
    rng = np.random.default_rng(0)
    for i in range(1, 4):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"00000{i}.png")
    (tmp_path / "attrs.txt").write_text(CELEBA)

    def align(rgb):  # the third image has "no face"
        if rgb[0, 0, 0] == first_pixel_of_third:
            return None
        return torch.from_numpy(rgb[:32, :32].copy()).permute(2, 0, 1).float() / 127.5 - 1

    first_pixel_of_third = np.asarray(Image.open(tmp_path / "000003.png"))[0, 0, 0]
    paths = [str(tmp_path / f"00000{i}.png") for i in range(1, 4)]
    z, kept = embed_images(paths, tiny_model.encode_identity, align=align, batch_size=2)
    assert kept == [0, 1] and z.shape == (2, 128)
    # Without an aligner, files are taken as aligned crops and resized; tensors pass through.
    z2, kept2 = embed_images(paths[:2] + [torch.zeros(3, 32, 32)], tiny_model.encode_identity, image_size=32)
    assert kept2 == [0, 1, 2] and torch.allclose(z2[2], tiny_model.encode_identity(torch.zeros(1, 3, 32, 32))[0])

    clf = train_classifier_from_annotations(
        str(tmp_path / "attrs.txt"), str(tmp_path), tiny_model.encode_identity, image_size=32,
        encoder_id=identity_encoder_id(tiny_model), heldout_fraction=1 / 3, epochs=2)
    assert clf.names == ("5_o_Clock_Shadow", "Smiling", "Young") and clf.encoder_id == "random:128:-"
    assert clf.metadata["n_train"] == "2"
