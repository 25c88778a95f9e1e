"""Crop -> paste round trips on animated real faces, masks, and the two paste modes.

Measured on 8-frame 320x240 clips, dlib landmarks (worst frame): feather mode PSNR outside the face hull
astronaut 54.6 dB, Grace Hopper 48.2 dB (only the feather band is touched; beyond it pixels are unchanged);
inside the face (two bilinear resamplings) 41.7 dB / 36.7 dB. Square (reference) mode resamples the whole box:
outside the hull 44.9 / 39.4 dB.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dva.face import crop_face, face_mask, load_face_config, paste_face, to_crop_coords, track_faces, track_quads
from dva.face.warp import warp_to_frame
from dva.video import iter_frames

CROP = 256


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b)[where] ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def _in_frame(crop_mask: np.ndarray, quad: np.ndarray, frame: np.ndarray, cut: float = 0.5) -> np.ndarray:
    """A crop-space mask warped into the frame, as bool [H, W] (warped weight above `cut`)."""
    height, width = frame.shape[:2]
    region, (x0, y0, x1, y1) = warp_to_frame(crop_mask.astype(np.float32), quad, width, height, cv2.BORDER_CONSTANT)
    full = np.zeros((height, width), bool)
    full[y0:y1, x0:x1] = region > cut
    return full


@pytest.fixture(scope="module", params=["astronaut", "grace_hopper"])
def aligned(request, sample_clip, dlib_landmarker, face_cfg):
    clip = sample_clip(request.param, frames=8, blinks=True)
    track = track_faces(iter_frames(clip), dlib_landmarker, face_cfg.track, name=clip)
    return request.param, clip, track, track_quads(track.points, face_cfg.align)


@pytest.mark.parametrize("mode, outside_db", [("feather", 45.0), ("square", 38.0)])
def test_unedited_round_trip_is_close_to_the_source(aligned, mode, outside_db):
    person, clip, track, quads = aligned
    cfg = load_face_config("dlib", [f"mask.paste_mode={mode}"]).mask
    for index, frame in enumerate(iter_frames(clip)):
        crop = crop_face(frame, quads[index], CROP)
        mask = face_mask(crop, to_crop_coords(track.points[index], quads[index], CROP), cfg)
        out = paste_face(frame, crop, quads[index], mask, cfg)
        face = _in_frame(mask, quads[index], frame)
        assert _psnr(out, frame, ~face) >= max(outside_db, 40.0 if mode == "feather" else 0), (person, index)
        assert _psnr(out, frame, face) >= 34.0, (person, index)
        if mode == "square":  # beyond the warped square the frame is untouched
            square = _in_frame(np.ones((CROP, CROP), bool), quads[index], frame, cut=0)
            assert np.array_equal(out[~square], frame[~square])


def test_feathered_edit_stays_inside_the_grown_mask(aligned, face_cfg):
    _, clip, track, quads = aligned
    frame = next(iter_frames(clip))
    crop = crop_face(frame, quads[0], CROP)
    mask = face_mask(crop, to_crop_coords(track.points[0], quads[0], CROP), face_cfg.mask)
    edited = 255 - crop  # as different as an edit can be
    out = paste_face(frame, edited, quads[0], mask, face_cfg.mask)
    reach = face_cfg.mask.dilate_px + int(np.ceil(4 * face_cfg.mask.blur_px)) + 2
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    outside = ~_in_frame(grown.astype(bool), quads[0], frame, cut=0)
    assert np.array_equal(out[outside], frame[outside])
    inside = _in_frame(mask, quads[0], frame)
    assert np.abs(out[inside].astype(int) - frame[inside]).mean() > 60  # the edit really landed


def test_hull_mask_covers_the_inner_face_and_not_the_corners(aligned, face_cfg):
    _, clip, track, quads = aligned
    frame = next(iter_frames(clip))
    crop = crop_face(frame, quads[0], CROP)
    points = to_crop_coords(track.points[0], quads[0], CROP)
    mask = face_mask(crop, points, face_cfg.mask)
    inner = np.round(points[27:68]).astype(int)  # nose, eyes, mouth
    assert mask[inner[:, 1], inner[:, 0]].all()
    assert not mask[:16, :16].any() and not mask[-16:, -16:].any()
    assert 0.2 < mask.mean() < 0.6


def test_a_parser_masker_replaces_the_hull(aligned, face_cfg):
    _, clip, track, quads = aligned
    frame = next(iter_frames(clip))
    crop = crop_face(frame, quads[0], CROP)

    def centre_square(image: np.ndarray) -> np.ndarray:
        mask = np.zeros(image.shape[:2], bool)
        mask[96:160, 96:160] = True
        return mask

    mask = face_mask(crop, np.zeros((68, 2)), face_cfg.mask, masker=centre_square)
    assert mask.sum() == 64 * 64
