"""Identity and landmark encoders from dlib's released models: real pretrained networks that pip ships.

`dlib-bin` and `face_recognition_models` (the `dlib` extra) bring the files, so these work offline where no other
pretrained weights exist (tests, CPU demos, fallbacks):
- identity: dlib's 128-d ResNet face descriptor (`dlib_face_recognition_resnet_model_v1.dat`), aligned by the
  5-point shape predictor as dlib intends; L2-normalised here (dlib's raw vectors have norm ≈ 1.4). Measured on
  skimage's astronaut and Grace Hopper: a shifted, brightened, noisy copy of a face ≈ 0.05 apart, the two people ≈ 0.48.
- landmarks: the 68-point shape predictor (`shape_predictor_68_face_landmarks.dat`), the point scheme the reference
  aligns with; coordinates normalised by the crop size and laid out as the reference z_lnd (102-d, no jaw).

Licence: the 68-point predictor was trained on iBUG 300-W, whose licence excludes commercial use. Anything that
offers `dlib_landmarks` as a default must say so.

No detector runs: the crops are already aligned, so one fixed face box stands in, `FACE_BOX`. It is the box dlib's
HOG detector (upsampled once) returns on FFHQ-aligned 256 crops, (46, 81)-(201, 236): measured on skimage's
astronaut and matplotlib's Grace Hopper, aligned by the FFHQ quad, the detector gave exactly this box for both, and
the shape predictors were trained on that detector's boxes.

`weights`, when set, is a local folder holding the model files under the names above (`dva.runtime.weights` fetches
the `MODEL_FILES` of an s3:// folder into one); otherwise the files of the installed `face_recognition_models`
package are used. (`import face_recognition_models` itself fails on current setuptools, so its folder is found with
importlib.)
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

from dva.dlib_models import import_dlib, packaged_folder
from dva.errors import ConfigError
from dva.models.config import EncoderConfig
from dva.models.reference.landmarks import z_lnd_from_points
from dva.models.weight_file import local_weight_file

SHAPE_5_FILE = "shape_predictor_5_face_landmarks.dat"
SHAPE_68_FILE = "shape_predictor_68_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# kind → the files it reads
MODEL_FILES = {"dlib_identity": (SHAPE_5_FILE, DESCRIPTOR_FILE), "dlib_landmarks": (SHAPE_68_FILE,)}

# (left, top, right, bottom) of the face in an aligned crop, as fractions of its size; see the module docstring.
FACE_BOX = (46 / 256, 81 / 256, 201 / 256, 236 / 256)


def _model_file(cfg: EncoderConfig, config_key: str, name: str) -> str:
    """Local path of the dlib model file `name` in the local folder `cfg.weights`, or in face_recognition_models."""
    key = f"{config_key}.weights"
    if cfg.sha256:
        raise ConfigError(f"config key `{config_key}.sha256`: not supported, `{key}` names a folder of dlib files")
    folder = cfg.weights or str(packaged_folder(key))
    return str(local_weight_file(f"{str(folder).rstrip('/')}/{name}", key))


def _uint8_images(images: torch.Tensor) -> list[np.ndarray]:
    """[B,3,H,W] in [-1,1] → contiguous H×W×3 uint8 RGB arrays, the input dlib takes."""
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [np.ascontiguousarray(p) for p in pixels.permute(0, 2, 3, 1).cpu().numpy()]


class _FixedBoxShapes:
    """A dlib shape predictor run on the fixed `FACE_BOX` of each crop."""

    def __init__(self, dlib: ModuleType, predictor_file: str):
        self.dlib = dlib
        self.predictor = dlib.shape_predictor(predictor_file)

    def __call__(self, image: np.ndarray):
        h, w = image.shape[:2]
        left, top, right, bottom = FACE_BOX
        box = self.dlib.rectangle(round(left * w), round(top * h), round(right * w), round(bottom * h))
        return self.predictor(image, box)


class DlibIdentityEncoder:
    """z_id from dlib's ResNet descriptor: aligned crops in [-1,1] → [B,128] unit vectors, on the input's device."""

    dim = 128

    def __init__(self, shapes: _FixedBoxShapes, descriptor_file: str):
        self.shapes = shapes
        self.descriptor = shapes.dlib.face_recognition_model_v1(descriptor_file)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        describe = self.descriptor.compute_face_descriptor
        feats = [np.asarray(describe(img, self.shapes(img))) for img in _uint8_images(images)]
        return F.normalize(torch.from_numpy(np.stack(feats)).float(), dim=1).to(images.device)


class DlibLandmarkEncoder:
    """z_lnd from dlib's 68 points: aligned crops in [-1,1] → [B,102] (x, y) of points 17-67 in [0, 1]."""

    dim = 102

    def __init__(self, shapes: _FixedBoxShapes):
        self.shapes = shapes

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        points = [[(p.x / w, p.y / h) for p in self.shapes(img).parts()] for img in _uint8_images(images)]
        return z_lnd_from_points(torch.tensor(points, dtype=torch.float32)).to(images.device)


def build_identity_encoder(cfg: EncoderConfig, config_key: str, role: str) -> DlibIdentityEncoder:
    """Registry builder for kind `dlib_identity` (needs the 5-point predictor and the descriptor network)."""
    dlib = import_dlib(f"{config_key}.kind", "kind 'dlib_identity'")
    shapes = _FixedBoxShapes(dlib, _model_file(cfg, config_key, SHAPE_5_FILE))
    return DlibIdentityEncoder(shapes, _model_file(cfg, config_key, DESCRIPTOR_FILE))


def build_landmark_encoder(cfg: EncoderConfig, config_key: str, role: str) -> DlibLandmarkEncoder:
    """Registry builder for kind `dlib_landmarks` (needs the 68-point predictor; non-commercial, see above)."""
    dlib = import_dlib(f"{config_key}.kind", "kind 'dlib_landmarks'")
    return DlibLandmarkEncoder(_FixedBoxShapes(dlib, _model_file(cfg, config_key, SHAPE_68_FILE)))
