"""Linear attribute classifiers on normalised z_id, and the edit they give (SPEC §3.6, classifier).

The artefact is one safetensors file: a `Linear(d, A)` trained with BCE on ẑ = (z − μ)/σ, the z_id statistics μ, σ
(computed over many identities, not one video), the attribute names, the identity encoder it belongs to and each
attribute's held-out accuracy. The edit moves ẑ along each attribute's unit weight vector:

    ẑ' = ẑ + Σ_a s_a·√d·w_a/‖w_a‖,  z_edit = l2norm(σ·ẑ' + μ)

Training data: CelebA / CelebAMask-HQ attribute annotations (`parse_celeba_attributes`) and z_id of the images
(`embed_images`, given the identity encoder and, for unaligned photos, an aligner); `dva train-classifier`
(`dva.train.classifier_job`) runs the whole chain.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dva.editing.artifact import check_dim, check_encoder, l2norm, read_artifact, write_artifact
from dva.errors import ConfigError, DvaError, NoFaceError, StorageError
from dva.storage import exists, open_file, read_many, redact

FORMAT = "dva-attribute-classifier-v1"


@dataclass
class AttributeClassifier:
    weight: torch.Tensor  # [A, d], acting on normalised z_id
    bias: torch.Tensor  # [A]
    names: tuple[str, ...]
    mu: torch.Tensor  # [d]
    sigma: torch.Tensor  # [d]
    encoder_id: str
    heldout_accuracy: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z.float() - self.mu.to(z.device)) / self.sigma.to(z.device)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Attribute logits [B, A] for raw z_id [B, d]."""
        return self.normalise(z) @ self.weight.to(z.device).T + self.bias.to(z.device)

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ConfigError(f"unknown attribute {name!r} for classifier {self.metadata.get('uri', '')!s}; "
                              f"valid attributes: {', '.join(self.names)}")
        return self.names.index(name)

    def save(self, uri: str) -> str:
        meta = {**{k: v for k, v in self.metadata.items() if k != "uri"}, "format": FORMAT,
                "names": json.dumps(list(self.names)), "encoder_id": self.encoder_id,
                "heldout_accuracy": json.dumps(self.heldout_accuracy)}
        tensors = {"weight": self.weight, "bias": self.bias, "mu": self.mu, "sigma": self.sigma}
        return write_artifact(uri, tensors, meta)

    @classmethod
    def load(cls, uri: str) -> "AttributeClassifier":
        t, meta = read_artifact(uri, FORMAT, "attribute classifier file")
        meta = dict(meta)
        names = tuple(json.loads(meta.pop("names")))
        encoder_id = meta.pop("encoder_id")
        accuracy = json.loads(meta.pop("heldout_accuracy"))
        meta.pop("format")
        return cls(t["weight"], t["bias"], names, t["mu"], t["sigma"], encoder_id, accuracy,
                   {**meta, "uri": str(uri)})


def zid_statistics(z_ids: torch.Tensor, min_sigma: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation of z_id over a set of images (use many identities)."""
    z = z_ids.float()
    if z.shape[0] < 2:
        raise DvaError(f"z_id statistics need at least 2 images, got {z.shape[0]}")
    return z.mean(0), z.std(0).clamp_min(min_sigma)


def train_attribute_classifier(
    z_ids: torch.Tensor, labels: torch.Tensor, names: Sequence[str], *, encoder_id: str,
    heldout_fraction: float = 0.1, epochs: int = 50, batch_size: int = 256, lr: float = 1e-2,
    weight_decay: float = 0.0, seed: int = 0,
) -> AttributeClassifier:
    """Fit one `Linear(d, A)` with BCE on ẑ = (z − μ)/σ; μ, σ come from all of `z_ids`.

    `labels` is [N, A] in {0, 1}. A random `heldout_fraction` of the rows is kept out of training and gives each
    attribute's accuracy in the artefact.
    """
    z_ids, labels = z_ids.float().cpu(), labels.float().cpu()
    n, d = z_ids.shape
    if labels.shape != (n, len(names)):
        raise DvaError(f"labels have shape {tuple(labels.shape)}, expected {(n, len(names))} "
                       f"({n} z_ids, {len(names)} attribute names)")
    if not ((labels == 0) | (labels == 1)).all():
        raise DvaError("labels must be 0 or 1 (CelebA's −1 is 0)")
    if len(set(names)) != len(names):
        raise DvaError(f"attribute names repeat: {sorted(x for x in set(names) if list(names).count(x) > 1)}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    n_held = int(round(n * heldout_fraction))
    if n_held < 1 or n - n_held < 2:
        raise DvaError(f"{n} labelled z_ids are too few for a held-out fraction of {heldout_fraction}")
    held, train = order[:n_held], order[n_held:]

    mu, sigma = zid_statistics(z_ids)
    zn = (z_ids - mu) / sigma
    torch.manual_seed(seed)
    linear = nn.Linear(d, len(names))
    opt = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        perm = train[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(perm), batch_size):
            rows = perm[i:i + batch_size]
            opt.zero_grad()
            loss_fn(linear(zn[rows]), labels[rows]).backward()
            opt.step()
    with torch.no_grad():
        correct = ((linear(zn[held]) > 0).float() == labels[held]).float().mean(0)
    # The share of positives among the held-out rows: accuracy means little next to max(rate, 1 − rate).
    positives = labels[held].mean(0)
    return AttributeClassifier(
        weight=linear.weight.detach().clone(), bias=linear.bias.detach().clone(), names=tuple(names),
        mu=mu, sigma=sigma, encoder_id=encoder_id,
        heldout_accuracy={name: float(a) for name, a in zip(names, correct)},
        metadata={"n_train": str(len(train)), "n_heldout": str(n_held), "epochs": str(epochs), "lr": str(lr),
                  "heldout_positive_rate": json.dumps({name: float(r) for name, r in zip(names, positives)})},
    )


def apply_classifier_edit(z_mean: torch.Tensor, clf: AttributeClassifier, scales: dict[str, float], *,
                          encoder_id: str) -> torch.Tensor:
    """z_edit = l2norm(σ·(ẑ + Σ s·√d·w/‖w‖) + μ) for z̄ of shape [d] or [B, d]; `encoder_id` is the model's.

    Written as l2norm(z̄ + σ·Σ s·√d·w/‖w‖), the same value without the round trip through ẑ, so s = 0 gives
    l2norm(z̄) exactly.
    """
    what = f"attribute classifier {clf.metadata.get('uri', '')}".rstrip()
    check_encoder(clf.encoder_id, encoder_id, what)
    check_dim(z_mean, clf.dim, what)
    rows = [clf.index(name) for name in scales]  # unknown names fail before any arithmetic
    w = clf.weight.to(z_mean.device)
    step = torch.zeros(clf.dim, device=z_mean.device)
    for row, s in zip(rows, scales.values()):
        step = step + float(s) * math.sqrt(clf.dim) * w[row] / w[row].norm()
    return l2norm(z_mean.float() + clf.sigma.to(z_mean.device) * step)


@dataclass
class AttributeTable:
    filenames: list[str]
    names: list[str]
    labels: torch.Tensor  # [N, A] uint8 in {0, 1}


def parse_celeba_attributes(source: str | Path) -> AttributeTable:
    """Read `list_attr_celeba.txt` / `CelebAMask-HQ-attribute-anno.txt` (a path or URI).

    Format: the image count; the attribute names; then one line per image, `filename v1 … vA` with 1 / −1.
    """
    try:
        with open_file(source, "rb") as f:
            lines = [ln for ln in io.TextIOWrapper(f, encoding="utf-8").read().splitlines() if ln.strip()]
    except StorageError as err:
        raise StorageError(f"attribute annotations: {err}") from None
    if len(lines) < 2:
        raise DvaError(f"{source}: an attribute file needs a count line and a names line")
    try:
        count = int(lines[0].split()[0])
    except ValueError:
        raise DvaError(f"{source} line 1: expected the image count, got {lines[0][:60]!r}") from None
    names = lines[1].split()
    rows = lines[2:]
    if count != len(rows):
        raise DvaError(f"{source}: line 1 says {count} images but {len(rows)} image lines follow")
    filenames, values = [], np.empty((len(rows), len(names)), dtype=np.uint8)
    for i, line in enumerate(rows):
        parts = line.split()
        if len(parts) != len(names) + 1 or not set(parts[1:]) <= {"1", "-1"}:
            raise DvaError(f"{source} line {i + 3}: expected a file name and {len(names)} values of 1 or -1, "
                           f"got {line[:80]!r}")
        filenames.append(parts[0])
        values[i] = [v == "1" for v in parts[1:]]
    return AttributeTable(filenames, names, torch.from_numpy(values))


def select_attributes(table: AttributeTable, names: Sequence[str]) -> AttributeTable:
    """The columns `names` of `table`, in that order; an unknown name fails with the list of valid ones."""
    unknown = [n for n in names if n not in table.names]
    if unknown:
        raise ConfigError(f"unknown attribute{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                          f"valid attributes: {', '.join(table.names)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"attributes named twice: {sorted({n for n in names if list(names).count(n) > 1})}")
    cols = [table.names.index(n) for n in names]
    return AttributeTable(table.filenames, list(names), table.labels[:, cols])


# align(rgb uint8 [H, W, 3]) -> crop [3, S, S] in [−1, 1], or None when the image has no usable face.
Aligner = Callable[[np.ndarray], Optional[torch.Tensor]]
Embedder = Callable[[torch.Tensor], torch.Tensor]


def _load_rgb(item) -> np.ndarray:
    from PIL import Image

    with open_file(item, "rb") as f:
        return np.array(Image.open(io.BytesIO(f.read())).convert("RGB"))


def _as_crop(item, align: Aligner | None, image_size: int | None) -> torch.Tensor | None:
    if isinstance(item, torch.Tensor):
        crop = item.float()
    else:
        rgb = _load_rgb(item) if isinstance(item, (str, Path)) else np.asarray(item)
        if align is not None:
            return align(rgb)
        crop = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 127.5 - 1.0
    if image_size is not None and crop.shape[-2:] != (image_size, image_size):
        crop = nn.functional.interpolate(crop[None], size=(image_size, image_size), mode="bilinear",
                                         antialias=True, align_corners=False)[0]
    return crop


@torch.no_grad()
def embed_images(images: Iterable, embed: Embedder, *, align: Aligner | None = None, batch_size: int = 32,
                 image_size: int | None = None, device: str | torch.device = "cpu"
                 ) -> tuple[torch.Tensor, list[int]]:
    """z_id [N_kept, d] of images and the indices kept.

    Items are crops [3, H, W] in [−1, 1], uint8 RGB arrays or image paths / URIs. Arrays and files go through
    `align` when given (it returns None for an image without a usable face, which is then skipped); otherwise they
    are taken as aligned crops. Crops are resized to `image_size` when set. `embed` is the identity encoder
    (e.g. `model.encode_identity`).
    """
    codes, kept, batch, batch_idx = [], [], [], []

    def flush():
        if batch:
            codes.append(embed(torch.stack(batch).to(device)).float().cpu())
            kept.extend(batch_idx)
            batch.clear()
            batch_idx.clear()

    for i, item in enumerate(images):
        crop = _as_crop(item, align, image_size)
        if crop is None:
            continue
        batch.append(crop)
        batch_idx.append(i)
        if len(batch) == batch_size:
            flush()
    flush()
    if not codes:
        raise NoFaceError("no image gave a z_id (every image failed alignment, or none were given)")
    return torch.cat(codes), kept


def _read_images(uris: Sequence[str], present: list[int], done: Callable[[int], object], batch: int = 64
                 ) -> Iterator[np.ndarray]:
    """RGB arrays of the `uris` that exist, in order; the index of each one yielded is appended to `present`, and
    `done(1)` is called for every uri, found or not (a progress bar's `update`).

    Files are fetched `batch` at a time (concurrently on S3). A missing file is skipped; an unreachable store or a
    file that is not an image is an error naming it.
    """
    from PIL import Image, UnidentifiedImageError

    for start in range(0, len(uris), batch):
        chunk = list(uris[start:start + batch])
        try:
            blobs: list[bytes | None] = list(read_many(chunk))
        except StorageError:  # a missing file fails the whole fetch: find which, one by one
            blobs = []
            for uri in chunk:
                try:
                    blobs.append(read_many([uri])[0])
                except StorageError:
                    if exists(uri):
                        raise
                    blobs.append(None)
        for offset, (uri, blob) in enumerate(zip(chunk, blobs)):
            done(1)
            if blob is None:
                continue
            try:
                rgb = np.array(Image.open(io.BytesIO(blob)).convert("RGB"))
            except (UnidentifiedImageError, OSError) as err:
                raise DvaError(f"image {redact(uri)} is not a readable image ({err}); remove it from the "
                               "annotations or replace the file") from None
            present.append(start + offset)
            yield rgb


def train_classifier_from_annotations(
    annotations: str, image_root: str, embed: Embedder, *, encoder_id: str, align: Aligner | None = None,
    attributes: Sequence[str] | None = None, limit: int | None = None, image_size: int | None = None,
    embed_batch_size: int = 32, device: str | torch.device = "cpu", progress: bool = False, **train_kwargs,
) -> AttributeClassifier:
    """CelebA-style annotations + images under `image_root` (path or URI) → a trained `AttributeClassifier`.

    `attributes` picks and orders a subset of the annotated ones (default: all). Annotated images that are not under
    `image_root`, and images `align` finds no face in, are skipped; their counts are in the metadata (`n_missing`,
    `n_no_face`). `embed_batch_size` is the identity encoder's batch; `train_kwargs` go to
    `train_attribute_classifier`.
    """
    table = parse_celeba_attributes(annotations)
    if attributes:
        table = select_attributes(table, attributes)
    files = table.filenames[:limit]
    root = str(image_root).rstrip("/")
    if not exists(root):
        raise DvaError(f"images folder {redact(root)} does not exist (no such folder, or nothing under that "
                       f"prefix); set it to where the images of {redact(annotations)} are")
    present: list[int] = []
    try:
        with tqdm(total=len(files), unit="image", desc="z_id", disable=not progress) as bar:
            images = _read_images([f"{root}/{name}" for name in files], present, bar.update)
            z, kept = embed_images(images, embed, align=align, batch_size=embed_batch_size, image_size=image_size,
                                   device=device)
    except NoFaceError:
        if present:
            raise DvaError(f"none of the {len(present)} images under {redact(root)} shows a face the front end "
                           "finds; check the images, or use aligned crops as they are") from None
        example = f"{root}/{files[0]}" if files else root
        raise DvaError(f"none of the {len(files)} images named in {redact(annotations)} is under {redact(root)} "
                       f"(e.g. {redact(example)}); set the images folder to the one that holds them") from None
    rows = [present[k] for k in kept]
    clf = train_attribute_classifier(z, table.labels[rows], table.names, encoder_id=encoder_id, **train_kwargs)
    clf.metadata.update({"annotations": redact(annotations), "images": redact(root), "n_images": str(len(files)),
                         "n_missing": str(len(files) - len(present)), "n_no_face": str(len(present) - len(kept))})
    return clf
