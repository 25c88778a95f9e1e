"""Identity encoder E_id on an insightface ArcFace ONNX model (e.g. `w600k_r50.onnx` of buffalo_l): L2-normalised.

The file is loaded with insightface's own loader (`insightface.model_zoo.get_model`), which recognises a recognition
model by its shapes (N×3×S×S → D) and knows its input scaling; nothing is downloaded.

Alignment. insightface normally warps each face so that five landmarks (eye centres, nose tip, mouth corners) land on
ArcFace's fixed template in a 112 square. Our crops are already aligned FFHQ-style, so one fixed square of the crop
stands in for that warp: `ARCFACE_REGION`, rows 30:222 and cols 32:224 of a 256 crop (side 0.75, centred
horizontally). It was measured on two real faces (skimage's astronaut, matplotlib's Grace Hopper) aligned to 256 by
the FFHQ quad: dlib's five points fitted to the template with scale + shift gave squares at (x 34, y 30, side 189)
and (x 30, y 30, side 197). It is a little larger than the reference IR-SE-50 crop (rows 35:223, cols 32:220), as
ArcFace's template keeps more forehead and chin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dva.errors import MissingWeightsError
from dva.models.config import EncoderConfig
from dva.models.reference import weight_file
from dva.threads import onnx_session_options

# (top, left, side) of the ArcFace template square in a 256 aligned crop; see the module docstring.
ARCFACE_REGION = (30, 32, 192)
CROP_SIZE = 256
EXPECTED_FILE = "an insightface ArcFace recognition model (.onnx, input N×3×112×112 RGB, output N×512)"


def arcface_region(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B,3,H,W] aligned crops in [-1,1] → [B,3,size,size]: ArcFace's template square, antialiased resize."""
    if images.shape[-2:] != (CROP_SIZE, CROP_SIZE):
        images = F.interpolate(images, (CROP_SIZE, CROP_SIZE), mode="bilinear", antialias=True, align_corners=False)
    top, left, side = ARCFACE_REGION
    square = images[:, :, top : top + side, left : left + side]
    return F.interpolate(square, (size, size), mode="bilinear", antialias=True, align_corners=False)


class InsightFaceIdentityEncoder:
    """E_id from an `insightface.model_zoo.ArcFaceONNX`: crops in [-1,1] → [B, dim] unit vectors, on their device."""

    def __init__(self, model) -> None:
        self.model = model
        self.dim = int(model.output_shape[-1])
        self.input_size = int(model.input_size[0])
        batch = model.input_shape[0]
        # An ONNX file exported with a fixed batch size takes exactly that many images per run.
        self.batch = batch if isinstance(batch, int) and batch > 0 else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # The model wants RGB pixels in [0, 255]; `forward` applies the file's own mean/std from there.
        pixels = (arcface_region(images.detach().float(), self.input_size) + 1) * 127.5
        pixels = pixels.cpu().numpy().astype(np.float32)
        step = self.batch or len(pixels)
        feats = np.concatenate([self.model.forward(pixels[i : i + step]) for i in range(0, len(pixels), step)])
        return F.normalize(torch.from_numpy(feats).float(), dim=1).to(images.device)


def load_arcface_onnx(path: Path, config_key: str):
    """insightface's loader on one local `.onnx`; a file that is not an ArcFace recognition model is rejected."""
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    if path.suffix != ".onnx":
        raise MissingWeightsError(str(path), config_key, f"is not an .onnx file; expected {EXPECTED_FILE}")
    try:
        model = get_model(str(path), sess_options=onnx_session_options())
    except Exception as err:  # protobuf, onnxruntime and routing errors all mean: not a usable model file
        raise MissingWeightsError(
            str(path), config_key, f"cannot be loaded ({type(err).__name__}: {err}); expected {EXPECTED_FILE}"
        ) from None
    if not isinstance(model, ArcFaceONNX):
        raise MissingWeightsError(
            str(path), config_key, f"is a {type(model).__name__} model, not recognition; expected {EXPECTED_FILE}"
        )
    return model


def build_identity_encoder(cfg: EncoderConfig, config_key: str, role: str) -> InsightFaceIdentityEncoder:
    """Registry builder for kind `insightface_arcface`: `cfg.weights` is the local .onnx file."""
    path = weight_file(cfg, config_key, EXPECTED_FILE)
    return InsightFaceIdentityEncoder(load_arcface_onnx(path, f"{config_key}.weights"))
