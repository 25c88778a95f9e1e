"""Landmark encoder E_lnd on face-alignment's FAN (2DFAN-4): aligned crops → 68 heatmaps → 102-d z_lnd.

The network is face-alignment's own `face_alignment.models.FAN(4)`; its weights are the released
`2DFAN4-11f355bf06.pth.tar`, which face-alignment 1.5 reads with `torch.load(weights_only=True)` as a plain state
dict and loads strictly. We read the same file from `landmark_encoder.weights` (a local file) and never
let face-alignment download anything.

Where the face is. face-alignment crops a square around a detector box before FAN sees it: centre = box centre
raised by 0.12 of the box height, side = 200 · (width + height) / 195. Our crops are already aligned, so one fixed
box stands in for the detector, as for dlib's shape predictor: `FACE_BOX`, the box dlib's HOG detector gives on
FFHQ-aligned crops (face-alignment runs its dlib detector with the same 195 reference scale). That square is larger
than the crop, so its border is zero-padded, as face-alignment pads frames.

Coordinates are continuous (pixel i spans [i, i+1)), in which face-alignment's decoded heatmap positions
(argmax + 0.5 ± 0.25) are read. face-alignment then truncates points to whole pixels of the frame; we keep them
fractional, normalised by the crop size, and lay them out as every z_lnd backend does (`z_lnd_from_points`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dva.models.config import EncoderConfig
from dva.models.dlib_encoders import FACE_BOX
from dva.models.reference import FrozenModule, load_weights
from dva.models.reference.landmarks import LANDMARK_DIM, z_lnd_from_points

EXPECTED_FILE = (
    "face-alignment's 2DFAN-4 file 2DFAN4-11f355bf06.pth.tar: a state dict of face_alignment.models.FAN(4) "
    "(keys conv1.*, m0.* … m3.*, l3.*)"
)
FAN_MODULES = 4  # 2DFAN-4: four stacked hourglasses; the last one's heatmaps are the prediction
FAN_INPUT = 256  # face-alignment's CROP_RESOLUTION
# face-alignment's crop rule (utils.SCALE_FACTOR, REFERENCE_SCALE, CENTER_Y_OFFSET).
_SQUARE_PER_SCALE = 200.0
_BOX_PER_SCALE = 195.0
_CENTRE_RAISE = 0.12


def fan_square(box: tuple[float, float, float, float] = FACE_BOX) -> tuple[float, float, float]:
    """(centre x, centre y, side) of face-alignment's crop square around `box` (left, top, right, bottom), in the
    box's units (here fractions of the aligned crop)."""
    left, top, right, bottom = box
    side = _SQUARE_PER_SCALE * ((right - left) + (bottom - top)) / _BOX_PER_SCALE
    return (left + right) / 2, (top + bottom) / 2 - _CENTRE_RAISE * (bottom - top), side


def heatmap_points(heatmaps: torch.Tensor) -> torch.Tensor:
    """[B,N,H,W] heatmaps → [B,N,2] (x, y) in heatmap cells: face-alignment's decode, batched.

    The peak cell's centre, moved a quarter cell towards the larger neighbour on each axis when the peak is not on
    the border (face-alignment's `get_preds_fromhm`, returned before its mapping to the frame).
    """
    b, n, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, n, h * w)
    peak = flat.argmax(dim=-1)
    x, y = peak % w, torch.div(peak, w, rounding_mode="floor")
    inner = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)

    def at(dx: int, dy: int) -> torch.Tensor:
        index = (y + dy).clamp(0, h - 1) * w + (x + dx).clamp(0, w - 1)
        return flat.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    step = torch.stack([torch.sign(at(1, 0) - at(-1, 0)), torch.sign(at(0, 1) - at(0, -1))], dim=-1)
    cells = torch.stack([x, y], dim=-1).to(heatmaps.dtype)
    return cells + 0.5 + 0.25 * step * inner.unsqueeze(-1)


class FanLandmarkEncoder(FrozenModule):
    """E_lnd on FAN: [B,3,H,W] aligned crops in [-1,1] → [B,102] (x, y) of points 17-67 in [0, 1] of the crop."""

    dim = LANDMARK_DIM

    def __init__(self) -> None:
        from face_alignment.models import FAN

        super().__init__()
        self.fan = FAN(FAN_MODULES)
        centre_x, centre_y, side = fan_square()
        # The square as an affine map from FAN-input coordinates ([-1, 1]) to crop coordinates ([-1, 1]).
        theta = torch.tensor([[side, 0.0, 2 * centre_x - 1], [0.0, side, 2 * centre_y - 1]])
        self.register_buffer("theta", theta, persistent=False)
        self.origin = (centre_x - side / 2, centre_y - side / 2)
        self.side = side
        self.freeze()

    def points(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] → [B,68,2] (x, y) as fractions of the crop's width and height (not clamped)."""
        images = images.float()
        grid = F.affine_grid(self.theta.expand(len(images), 2, 3), [len(images), 3, FAN_INPUT, FAN_INPUT],
                             align_corners=False)
        # face-alignment feeds RGB in [0, 1], black outside the frame.
        square = F.grid_sample((images + 1) / 2, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        heatmaps = self.fan(square)[-1]
        cells = heatmap_points(heatmaps.float())
        origin = torch.tensor(self.origin, device=cells.device, dtype=cells.dtype)
        return origin + cells * (self.side / heatmaps.shape[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return z_lnd_from_points(self.points(images))


def build_landmark_encoder(cfg: EncoderConfig, config_key: str, role: str) -> FanLandmarkEncoder:
    """Registry builder for kind `fan_landmarks`: load `cfg.weights` (the 2DFAN-4 state dict) strictly."""
    encoder = FanLandmarkEncoder()
    load_weights(encoder.fan, cfg, config_key, EXPECTED_FILE)
    return encoder
