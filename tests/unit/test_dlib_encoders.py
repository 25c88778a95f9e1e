"""dlib identity and landmark encoders on real faces (skimage's astronaut, matplotlib's Grace Hopper)."""

from __future__ import annotations

import importlib.util

import cv2
import dlib
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from dva.errors import ConfigError, MissingWeightsError
from dva.models.config import EncoderConfig
from dva.models.dlib_encoders import FACE_BOX, DlibIdentityEncoder, DlibLandmarkEncoder
from dva.models.encoders import build_encoder

CROP = 256
PACKAGED_MODELS = importlib.util.find_spec("face_recognition_models").submodule_search_locations[0] + "/models"


def _aligned_crop(image: np.ndarray) -> torch.Tensor:
    """A rough FFHQ-like 256 crop in [-1,1], [3,H,W]: dlib's detector box placed where `FACE_BOX` expects it."""
    box = dlib.get_frontal_face_detector()(image, 1)[0]
    left, top, right, _ = FACE_BOX
    side = box.width() / (right - left)  # the crop's side in source pixels
    x0, y0 = box.left() - left * side, box.top() - top * side
    scale = CROP / side
    warp = np.float32([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    crop = cv2.warpAffine(image, warp, (CROP, CROP), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return torch.from_numpy(crop).permute(2, 0, 1).float() / 127.5 - 1


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """[astronaut, astronaut perturbed, Grace Hopper, Grace Hopper perturbed] as a [4,3,256,256] batch in [-1,1]."""
    hopper = np.asarray(Image.open(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg").convert("RGB"))
    crops = [_aligned_crop(data.astronaut()), _aligned_crop(hopper)]
    noise = torch.Generator().manual_seed(0)

    def perturb(x: torch.Tensor) -> torch.Tensor:  # a few pixels off, brighter, noisy: still the same person
        moved = torch.roll(x, shifts=(3, -4), dims=(1, 2)) + 0.08
        return (moved + 0.03 * torch.randn(x.shape, generator=noise)).clamp(-1, 1)

    return torch.stack([crops[0], perturb(crops[0]), crops[1], perturb(crops[1])])


@pytest.fixture(scope="module")
def identity() -> DlibIdentityEncoder:
    return build_encoder(EncoderConfig(kind="dlib_identity", dim=128), "model.identity_encoder", "identity")


def test_identity_descriptor_separates_people(faces, identity):
    z = identity(faces)
    assert z.shape == (4, 128) and z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    dist = torch.cdist(z, z)
    # Unit vectors (dlib's raw descriptors have norm ≈ 1.4, so its usual 0.6 threshold becomes ≈ 0.42 here).
    assert dist[0, 1] < 0.2 and dist[2, 3] < 0.2  # same person, perturbed (measured ≈ 0.05)
    assert dist[0, 2] > 0.4 and dist[1, 3] > 0.4  # astronaut vs Grace Hopper (measured ≈ 0.48)
    assert dist[0, 2] > 4 * max(dist[0, 1], dist[2, 3])


def test_landmarks_are_sensible_on_real_faces(faces):
    encoder = build_encoder(EncoderConfig(kind="dlib_landmarks", dim=102), "model.landmark_encoder", "landmark")
    assert isinstance(encoder, DlibLandmarkEncoder)
    z = encoder(faces[[0, 2]])
    assert z.shape == (2, 102)
    assert 0 <= z.min() and z.max() <= 1
    points = z.view(2, 51, 2)  # points 17-67, (x, y)
    right_eye, left_eye = points[:, 36 - 17 : 42 - 17].mean(1), points[:, 42 - 17 : 48 - 17].mean(1)
    nose_tip, mouth = points[:, 30 - 17], points[:, 48 - 17 :].mean(1)
    assert (right_eye[:, 0] < left_eye[:, 0]).all()  # image left to right
    assert (right_eye[:, 1] < nose_tip[:, 1]).all() and (nose_tip[:, 1] < mouth[:, 1]).all()  # eyes above mouth
    # FFHQ-like framing puts the eyes a little above the centre and the mouth in the lower third.
    assert ((left_eye[:, 1] - 0.48).abs() < 0.06).all()
    assert ((mouth[:, 1] - 0.75).abs() < 0.06).all()


def test_weights_folder_override(tmp_path, faces, identity):
    (tmp_path / "models").mkdir()
    for name in ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat"):
        (tmp_path / "models" / name).symlink_to(f"{PACKAGED_MODELS}/{name}")
    cfg = EncoderConfig(kind="dlib_identity", dim=128, weights=str(tmp_path / "models"))
    assert torch.allclose(build_encoder(cfg, "model.identity_encoder", "identity")(faces[:1]), identity(faces[:1]))

    cfg = EncoderConfig(kind="dlib_landmarks", dim=102, weights=str(tmp_path / "models"))
    with pytest.raises(MissingWeightsError) as err:
        build_encoder(cfg, "model.landmark_encoder", "landmark")
    assert "shape_predictor_68_face_landmarks.dat" in str(err.value)
    assert "model.landmark_encoder.weights" in str(err.value)

    with pytest.raises(ConfigError, match="sha256"):
        build_encoder(EncoderConfig(kind="dlib_landmarks", dim=102, sha256="ab"), "model.landmark_encoder", "landmark")
