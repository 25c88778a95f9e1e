"""`dva train-classifier` end to end: aligned crops as PNGs + a CelebA attribute file → one classifier file that the
edit job's classifier specs apply, with its held-out accuracy printed and written as JSON; and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dva.cli import main as dva
from dva.editing import AttributeClassifier, identity_encoder_id, l2norm
from dva.train.classifier_job import load_train_classifier_config
from dva.editing.edits import edited_identity, parse_edit
from dva.errors import DvaError
from dva.runtime.weights import load_model

NAMES = ["Smiling", "Young", "Bald"]  # Smiling and Young follow identity; Bald is a coin toss


def as_crops(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, S, S, 3] → [N, 3, S, S] in [−1, 1], as the command reads aligned crops."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """32² crops whose Smiling / Young are the sign of z_id's projection on a hidden direction (the tiny model's
    identity encoder), images near either boundary left out; an annotation file naming one image that is absent."""
    root = tmp_path_factory.mktemp("celeba")
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (3000, 8, 8, 3), dtype=np.uint8)
    crops = np.stack([np.array(Image.fromarray(x).resize((32, 32), Image.BILINEAR)) for x in low])
    crops = np.clip(crops.astype(int) + rng.integers(-20, 21, crops.shape), 0, 255).astype(np.uint8)

    model = load_model(load_train_classifier_config("local_tiny", ["images=x", "annotations=x",
                                                                   "output=x.safetensors"]).model)
    with torch.no_grad():
        z = model.encode_identity(as_crops(crops))
    hidden = torch.from_numpy(rng.standard_normal((2, z.shape[1]))).float()
    proj = (z - z.mean(0)) @ hidden.T
    clear = ((proj.abs() > proj.abs().quantile(0.2, dim=0)).all(1)).numpy()
    crops, proj, z = crops[clear], proj[clear], z[clear]
    labels = np.concatenate([(proj > 0).numpy(), rng.random((len(crops), 1)) > 0.5], axis=1)

    lines = []
    for i, (crop, row) in enumerate(zip(crops, labels)):
        Image.fromarray(crop).save(root / f"{i:06d}.png")
        lines.append(f"{i:06d}.png " + " ".join("1" if v else "-1" for v in row))
    lines.append("999999.png " + " ".join(["1"] * len(NAMES)))  # annotated, but not in the folder
    (root / "list_attr_celeba.txt").write_text(f"{len(lines)}\n{' '.join(NAMES)}\n" + "\n".join(lines) + "\n")
    return root, len(crops), model, z


def train(root, out, *extra):
    return dva(["train-classifier", "--config", "local_tiny", f"images={root}",
                f"annotations={root}/list_attr_celeba.txt", f"output={out}", "aligned=true", *extra])


def test_trains_saves_reports_and_the_edit_job_applies_it(dataset, tmp_path, capsys):
    root, n_images, model, z = dataset
    out = tmp_path / "clf" / "celeba.safetensors"
    assert train(root, out, "attributes=[Smiling,Young]", "heldout_fraction=0.1") == 0
    printed = capsys.readouterr().out

    clf = AttributeClassifier.load(str(out))
    encoder = identity_encoder_id(model)
    assert clf.names == ("Smiling", "Young") and clf.encoder_id == encoder == "random:128:-"
    assert min(clf.heldout_accuracy.values()) >= 0.95, clf.heldout_accuracy
    assert clf.metadata["n_missing"] == "1" and clf.metadata["n_no_face"] == "0"

    report = json.loads((tmp_path / "clf" / "celeba.accuracy.json").read_text())
    assert report["heldout_accuracy"] == clf.heldout_accuracy
    assert report["counts"] == {"images": n_images + 1, "missing": 1, "no_face": 0,
                                "train": n_images - round(n_images * 0.1), "heldout": round(n_images * 0.1)}
    assert 0.2 < report["heldout_positive_rate"]["Smiling"] < 0.8
    table = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip()}
    assert float(table["Smiling"][1]) == pytest.approx(clf.heldout_accuracy["Smiling"], abs=5e-4)
    assert "1 not found, 0 without a face" in printed and str(out) in printed

    # The edit job's classifier specs: s = 0 is the normalised mean exactly; growing s raises the logit.
    z_mean = z[:8].mean(0)  # one "video" of 8 frames

    def edit(spec: str) -> torch.Tensor:
        return edited_identity(parse_edit(spec), z_mean, encoder_id=encoder, classifier=clf)

    assert torch.equal(edit("classifier:Smiling:0"), l2norm(z_mean))
    logits = [clf.logits(edit(f"classifier:Smiling:{s}")[None])[0, 0].item() for s in (-1, -0.5, 0, 0.5, 1)]
    assert all(b > a for a, b in zip(logits, logits[1:])), logits


def test_bad_attribute_lists_the_valid_ones(dataset, tmp_path, capsys):
    root = dataset[0]
    assert train(root, tmp_path / "c.safetensors", "attributes=[Smiling,Smilng]") == 2
    err = capsys.readouterr().err
    assert "unknown attribute 'Smilng'" in err and "valid attributes: Smiling, Young, Bald" in err
    assert not (tmp_path / "c.safetensors").exists()


def test_missing_annotations_or_images_are_named(dataset, tmp_path, capsys):
    root = dataset[0]
    base = ["train-classifier", f"output={tmp_path}/c.safetensors", "aligned=true"]
    assert dva([*base, f"images={root}", f"annotations={tmp_path}/nope.txt"]) == 2
    err = capsys.readouterr().err
    assert f"attribute annotations: cannot open {tmp_path}/nope.txt: it does not exist" in err

    annotations = f"annotations={root}/list_attr_celeba.txt"
    assert dva([*base, f"images={tmp_path}/no_images", annotations]) == 2
    assert f"images folder {tmp_path}/no_images does not exist" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.png").write_bytes(b"")
    assert dva([*base, f"images={tmp_path}/other", annotations]) == 2
    err = capsys.readouterr().err
    assert f"is under {tmp_path}/other (e.g. {tmp_path}/other/000000.png)" in err
    assert not (tmp_path / "c.safetensors").exists()


def test_photos_are_aligned_by_the_front_end_and_faceless_ones_skipped(tmp_path, capsys):
    from dva.samples import load_photo

    photos = [load_photo("astronaut"), load_photo("grace_hopper")]
    photos += [p[:, ::-1] for p in photos] + [np.full((300, 300, 3), 127, np.uint8)]  # mirrored; no face
    for i, photo in enumerate(photos):
        Image.fromarray(np.ascontiguousarray(photo)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "attrs.txt").write_text("5\nEyeglasses Male\n" + "".join(
        f"{i}.jpg {'1' if i % 2 else '-1'} {'-1' if i < 2 else '1'}\n" for i in range(5)))
    out = tmp_path / "clf.safetensors"
    assert dva(["train-classifier", "--config", "local_tiny", f"images={tmp_path}",
                f"annotations={tmp_path}/attrs.txt", f"output={out}", "heldout_fraction=0.25", "epochs=5"]) == 0
    assert "0 not found, 1 without a face (skipped); 3 for training, 1 held out" in capsys.readouterr().out
    clf = AttributeClassifier.load(str(out))
    assert clf.names == ("Eyeglasses", "Male") and clf.metadata["aligned"] == "false"
    assert clf.metadata["face_backend"] == "dlib"


def test_images_annotations_and_output_in_object_storage(dataset, s3_bucket, capsys):
    from dva.storage import open_file, write_bytes_atomic

    root = dataset[0]
    rows = (root / "list_attr_celeba.txt").read_text().splitlines()[2:42] + ["999999.png 1 1 1"]
    write_bytes_atomic(f"{s3_bucket}/celeba/attrs.txt", f"{len(rows)}\n{' '.join(NAMES)}\n{chr(10).join(rows)}\n"
                       .encode())
    for row in rows[:-1]:
        name = row.split()[0]
        write_bytes_atomic(f"{s3_bucket}/celeba/img/{name}", (root / name).read_bytes())
    out = f"{s3_bucket}/classifiers/clf.safetensors"
    assert dva(["train-classifier", f"images={s3_bucket}/celeba/img", f"annotations={s3_bucket}/celeba/attrs.txt",
                f"output={out}", "aligned=true", "epochs=2", "batch_images=16"]) == 0
    assert "41 annotated images: 1 not found" in capsys.readouterr().out
    clf = AttributeClassifier.load(out)
    assert clf.names == tuple(NAMES) and clf.metadata["n_train"] == "36"
    with open_file(f"{s3_bucket}/classifiers/clf.accuracy.json") as f:
        assert json.load(f)["counts"]["missing"] == 1


@pytest.mark.parametrize("preset", ["local_tiny", "gpu"])
def test_presets_load_and_match_their_model(preset):
    cfg = load_train_classifier_config(preset, ["images=x", "annotations=y", "output=z.safetensors"])
    assert cfg.face.align.crop_size == cfg.model.unet.image_size and not cfg.aligned
    with pytest.raises(DvaError, match="`output`.*must end in .safetensors"):
        load_train_classifier_config(preset, ["images=x", "annotations=y", "output=z.pt"])
