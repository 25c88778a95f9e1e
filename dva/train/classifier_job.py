"""`dva train-classifier`: attribute classifiers on z_id from annotated face images (SPEC §3.6, classifier edit).

    dva train-classifier --config gpu images=s3://bucket/CelebAMask-HQ/CelebA-HQ-img \\
        annotations=s3://bucket/CelebAMask-HQ/CelebAMask-HQ-attribute-anno.txt \\
        output=s3://bucket/classifiers/celebahq.safetensors model.checkpoint=s3://bucket/models/dva256.safetensors
    dva edit … classifier=s3://bucket/classifiers/celebahq.safetensors 'edits=[classifier:Smiling:1.5]'

Images → face crops (the front end's alignment, or `aligned=true` for crops as they are) → z_id with the model's
identity encoder → μ, σ over all images → one linear classifier per attribute (BCE on normalised z_id) →
one file for the edit job, and each attribute's accuracy on a held-out split, printed and written to
`<output stem>.accuracy.json`. Single process (the identity encoder on the GPU when there is one).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from dva.editing.artifact import identity_encoder_id
from dva.editing.classifier import AttributeClassifier, Aligner, train_classifier_from_annotations
from dva.errors import ConfigError
from dva.face.config import FaceConfig
from dva.models.config import ModelConfig
from dva.runtime.cli import EXIT_OK, command_parser, run_command
from dva.runtime.config import check_crops_fit_model, load_job_config
from dva.runtime.cluster import configured_device
from dva.storage import redact, shown, write_bytes_atomic

SUFFIX = ".safetensors"


@dataclass
class TrainClassifierConfig:
    images: str = ""  # folder or s3:// prefix holding the annotated images (names as in the annotations file)
    annotations: str = ""  # CelebA `list_attr_celeba.txt` / `CelebAMask-HQ-attribute-anno.txt` (path or URI)
    output: str = ""  # the classifier file to write, `….safetensors` (path or URI)
    attributes: list[str] = field(default_factory=list)  # the annotated attributes to learn, in order; [] = all
    aligned: bool = False  # the images are already aligned face crops: no detection, only a resize
    limit: int = 0  # use the first `limit` annotated images (0 = all)
    heldout_fraction: float = 0.1  # share of the images kept out of training for the accuracy report
    seed: int = 0  # the held-out split, initial weights and batch order
    epochs: int = 50
    batch_size: int = 256  # z_ids per optimiser step
    lr: float = 1e-2  # Adam
    weight_decay: float = 0.0
    batch_images: int = 32  # images per identity-encoder batch
    device: str = "auto"  # auto = cuda when available
    progress: bool = True  # a progress bar over the images
    model_preset: str = "dva256"
    face_preset: str = "dlib"
    model: ModelConfig = field(default_factory=ModelConfig)
    face: FaceConfig = field(default_factory=FaceConfig)

    def validate(self, key: str) -> None:
        for name, what in (("images", "a folder or s3:// prefix of the annotated images"),
                           ("annotations", "the CelebA-format attribute file"),
                           ("output", f"the classifier file to write (a path or URI ending in {SUFFIX})")):
            if not getattr(self, name):
                raise ConfigError(f"config key `{name}`: set it to {what}")
        if not self.output.endswith(SUFFIX):
            raise ConfigError(f"config key `output`: {self.output!r} must end in {SUFFIX}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"config key `heldout_fraction`: {self.heldout_fraction} is not in (0, 1)")
        for name in ("epochs", "batch_size", "batch_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config key `{name}`: at least 1")
        if self.limit < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("config keys `limit` (>= 0, 0 = all), `lr` (> 0) and `weight_decay` (>= 0) are out "
                              "of range")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"config key `device`: {self.device!r} is not one of auto, cpu, cuda")
        if not self.aligned:
            check_crops_fit_model(self.face, self.model)


def load_train_classifier_config(name_or_path: str, overrides: Sequence[str] = ()) -> TrainClassifierConfig:
    """A preset from configs/train_classifier/ (or a YAML path) over its model and face presets, plus overrides."""
    return load_job_config(TrainClassifierConfig, name_or_path, overrides, group="train_classifier")


def accuracy_uri(output: str) -> str:
    """`x/celebahq.safetensors` → `x/celebahq.accuracy.json`."""
    return output[: -len(SUFFIX)] + ".accuracy.json"


def photo_aligner(detect: Callable[[np.ndarray], list], face: FaceConfig) -> Aligner:
    """Largest face of a photo → its aligned crop in [−1, 1] (the edit job's alignment of one frame), or None.

    `detect` is a `FaceLandmarker.detect`.
    """
    from dva.crops import crops_to_tensor
    from dva.face.photo import align_photo

    def align(rgb: np.ndarray) -> Optional[torch.Tensor]:
        crop = align_photo(rgb, detect, face.align)
        return None if crop is None else crops_to_tensor(crop[None])[0]

    return align


def train_classifier(cfg: TrainClassifierConfig) -> AttributeClassifier:
    """Train, write the classifier file and its accuracy JSON; return the classifier."""
    from dva.face.landmarker import build_landmarker
    from dva.runtime.weights import load_model

    device = configured_device(cfg.device)
    # Built on first use, so that a missing annotation file or a misspelt attribute fails before any weights load.
    model = functools.cache(lambda: load_model(cfg.model, device))
    landmarker = functools.cache(lambda: build_landmarker(cfg.face, "face."))
    align = None if cfg.aligned else photo_aligner(lambda rgb: landmarker().detect(rgb), cfg.face)
    clf = train_classifier_from_annotations(
        cfg.annotations, cfg.images, lambda crops: model().encode_identity(crops),
        encoder_id=identity_encoder_id(cfg.model), align=align, attributes=list(cfg.attributes) or None,
        limit=cfg.limit or None, image_size=cfg.model.unet.image_size, embed_batch_size=cfg.batch_images,
        device=device, progress=cfg.progress, heldout_fraction=cfg.heldout_fraction, epochs=cfg.epochs,
        batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed)
    clf.metadata.update({"model": cfg.model.name, "checkpoint": redact(cfg.model.checkpoint or ""),
                         "aligned": str(cfg.aligned).lower(), "face_backend": "" if cfg.aligned else cfg.face.backend,
                         "seed": str(cfg.seed), "heldout_fraction": str(cfg.heldout_fraction)})
    clf.save(cfg.output)
    write_bytes_atomic(accuracy_uri(cfg.output), json.dumps(accuracy_report(clf, cfg.output), indent=1).encode())
    return clf


def accuracy_report(clf: AttributeClassifier, uri: str) -> dict:
    m = clf.metadata
    return {
        "classifier": redact(uri), "encoder_id": clf.encoder_id, "model": m.get("model", ""),
        "checkpoint": m.get("checkpoint", ""), "annotations": m.get("annotations", ""), "images": m.get("images", ""),
        "counts": {key: int(m.get(f"n_{key}", 0)) for key in ("images", "missing", "no_face", "train", "heldout")},
        "heldout_accuracy": clf.heldout_accuracy,
        "heldout_positive_rate": json.loads(m.get("heldout_positive_rate", "{}")),
        "mean_heldout_accuracy": float(np.mean(list(clf.heldout_accuracy.values()))),
    }


def format_accuracy_table(report: dict) -> str:
    """Per-attribute held-out accuracy next to the majority-class accuracy it has to beat."""
    rates = report["heldout_positive_rate"]
    width = max(len("attribute"), *(len(n) for n in report["heldout_accuracy"]))
    lines = [f"{'attribute':<{width}}  held-out accuracy  majority baseline  positives"]
    for name, acc in report["heldout_accuracy"].items():
        rate = rates.get(name, float("nan"))
        lines.append(f"{name:<{width}}  {acc:>17.3f}  {max(rate, 1 - rate):>17.3f}  {rate:>9.1%}")
    lines.append(f"{'mean':<{width}}  {report['mean_heldout_accuracy']:>17.3f}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None, preset: str = "local_tiny") -> int:
    """`dva train-classifier [--config NAME|YAML] key=value ...` — also the `ray job submit` entrypoint."""
    parser = command_parser("dva train-classifier", __doc__.splitlines()[0], config=preset, group="train_classifier",
                            example="images=celeba/img annotations=celeba/list_attr_celeba.txt "
                            "output=out/celeba.safetensors 'attributes=[Smiling,Young]'")

    def run(args) -> int:
        cfg = load_train_classifier_config(args.config, args.overrides)
        report = accuracy_report(train_classifier(cfg), cfg.output)
        c = report["counts"]
        print(f"[dva] {c['images']} annotated images: {c['missing']} not found, {c['no_face']} without a face "
              f"(skipped); {c['train']} for training, {c['heldout']} held out")
        print(format_accuracy_table(report))
        print(f"[dva] classifier: {shown(cfg.output)}\n[dva] accuracy: {shown(accuracy_uri(cfg.output))}")
        return EXIT_OK

    return run_command(parser, argv, run)
