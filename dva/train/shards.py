"""The training dataset on storage: one Parquet shard per video, one row per frame, and a `dataset.yaml`.

    <prefix>/dataset.yaml                 image size, encoders and mask source the shards were made with
    <prefix>/shards/<video_id>.parquet    columns of SHARD_COLUMNS; one row group per chunk of frames
    <prefix>/manifest/                    per-video status rows (dva.runtime.manifest, edit "")

Crops and masks are PNG (lossless). Each row carries the z codes of the crop and of its mirror image, so a training
step that flips a frame needs no encoder (the codes of a flipped face are not a flip of the codes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import cv2
import numpy as np
import pyarrow as pa
from omegaconf import OmegaConf

from dva.errors import ConfigError, StorageError
from dva.models.config import EncoderConfig, ModelConfig
from dva.storage import exists, join, list_files, open_file, redact, write_bytes_atomic

SHARDS = "shards"
DATASET_FILE = "dataset.yaml"
CODE_COLUMNS = ("z_id", "z_lnd", "z_id_flip", "z_lnd_flip")


def shard_schema(id_dim: int, lnd_dim: int) -> pa.Schema:
    def vec(dim: int) -> pa.DataType:
        return pa.list_(pa.float32(), dim)

    return pa.schema([
        ("video_id", pa.string()), ("frame", pa.int32()), ("num_frames", pa.int32()),
        ("image", pa.binary()), ("mask", pa.binary()),
        ("z_id", vec(id_dim)), ("z_lnd", vec(lnd_dim)), ("z_id_flip", vec(id_dim)), ("z_lnd_flip", vec(lnd_dim)),
    ])


def encode_png(image: np.ndarray) -> bytes:
    """RGB uint8 [H, W, 3] or grey [H, W] → PNG bytes (RGB channel order, readable by any tool)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ValueError(f"cannot PNG-encode an array of shape {image.shape}")
    return data.tobytes()


def decode_png(data: bytes, colour: bool) -> np.ndarray:
    """PNG bytes → RGB uint8 [H, W, 3] (`colour`) or grey uint8 [H, W]."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise StorageError("a shard row holds bytes that are not a PNG image; rerun `dva preprocess` for its video")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if colour else image


def frames_table(schema: pa.Schema, video_id: str, start: int, num_frames: int, crops: np.ndarray,
                 masks: np.ndarray, codes: dict[str, np.ndarray]) -> pa.Table:
    """Rows for frames start… of one video: crops uint8 [n, S, S, 3], masks bool [n, S, S], codes [n, dim]."""
    n = len(crops)
    columns = {
        "video_id": [video_id] * n,
        "frame": np.arange(start, start + n, dtype=np.int32),
        "num_frames": np.full(n, num_frames, np.int32),
        "image": [encode_png(c) for c in crops],
        "mask": [encode_png(m.astype(np.uint8) * 255) for m in masks],
    }
    for name in CODE_COLUMNS:
        values = np.ascontiguousarray(codes[name], np.float32)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    return pa.Table.from_pydict(columns, schema=schema)


def shard_uri(prefix: str, video_id: str) -> str:
    return join(prefix, SHARDS, f"{video_id}.parquet")


def list_shards(prefix: str) -> list[str]:
    """Every committed shard under `prefix` (in-progress writes are hidden), or StorageError when there is none."""
    shards = list_files(join(prefix, SHARDS), (".parquet",))
    if not shards:
        raise StorageError(f"no training shards under {redact(join(prefix, SHARDS))}; run `dva preprocess` with "
                           f"output={redact(prefix)} first, or fix `data.path`")
    return shards


@dataclass
class DatasetInfo:
    """What a shard's contents depend on: a training model must match it."""

    image_size: int
    identity_encoder: EncoderConfig
    landmark_encoder: EncoderConfig
    mask: str  # "landmark_hull" or "face_parser:<kind>"

    @classmethod
    def of(cls, model: ModelConfig) -> DatasetInfo:
        mask = f"face_parser:{model.face_parser.kind}" if model.face_parser is not None else "landmark_hull"
        return cls(model.unet.image_size, model.identity_encoder, model.landmark_encoder, mask)

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(OmegaConf.create(asdict(self)))

    def mismatch(self, other: DatasetInfo, masks: bool) -> Optional[str]:
        """Why shards made with `other` cannot be mixed with (`masks`: masks count) or trained as `self`."""
        if masks and self.mask != other.mask:
            return f"masks from {other.mask} ≠ {self.mask}"
        if self.image_size != other.image_size:
            return f"image size {other.image_size} ≠ {self.image_size}"
        for role in ("identity_encoder", "landmark_encoder"):
            a, b = getattr(self, role), getattr(other, role)
            if (a.kind, a.dim) != (b.kind, b.dim) or (a.sha256 and b.sha256 and a.sha256 != b.sha256):
                return f"{role} {b.kind}/{b.dim} ≠ {a.kind}/{a.dim}"
        return None


def read_dataset_info(prefix: str) -> Optional[DatasetInfo]:
    uri = join(prefix, DATASET_FILE)
    if not exists(uri):
        return None
    with open_file(uri) as f:
        data = OmegaConf.to_container(OmegaConf.create(f.read().decode()))
    return DatasetInfo(data["image_size"], EncoderConfig(**data["identity_encoder"]),
                       EncoderConfig(**data["landmark_encoder"]), data["mask"])


def check_dataset(prefix: str, expected: DatasetInfo, what: str, masks: bool) -> None:
    """Raise ConfigError when the shards under `prefix` were made with other settings than `expected`."""
    found = read_dataset_info(prefix)
    if found is None:
        return
    problem = expected.mismatch(found, masks)
    if problem:
        raise ConfigError(f"the shards under {redact(prefix)} were made with other settings ({problem}) than "
                          f"{what}; use a matching model config or another dataset prefix")


def write_dataset_info(prefix: str, info: DatasetInfo) -> None:
    write_bytes_atomic(join(prefix, DATASET_FILE), info.to_yaml().encode())
