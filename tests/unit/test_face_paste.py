"""Crop -> paste round trips on animated real faces, masks, and the two paste modes.

Measured on 8-frame 320x240 clips, dlib landmarks (worst frame): feather mode PSNR outside the face hull
astronaut 54.6 dB, Grace Hopper 48.2 dB (only the feather band is touched; beyond it pixels are unchanged);
inside the face (two bilinear resamplings) 41.7 dB / 36.7 dB. Square (reference) mode resamples the whole box:
outside the hull 44.9 / 39.4 dB.

Several faces per frame (`paste_faces`) are checked on synthetic landmarks: scaled copies of one 68-point face on
a noise frame, so any pixel a paste touches shows.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dva.face import (FaceInFrame, crop_face, face_mask, feather, landmark_hull_mask, landmark_hull_region,
                      load_face_config, paste_face, paste_faces, quad_axes, quads_from_axes, to_crop_coords,
                      track_faces, track_quads)
from dva.face.config import MaskConfig
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


def _template() -> np.ndarray:
    """68 landmarks of a face of half-width 1 centred at the origin: jaw arc, brows, nose, eyes, mouth."""
    points = np.zeros((68, 2))
    angles = np.linspace(np.pi, 0, 17)
    points[:17] = np.stack([np.cos(angles), 1.2 * np.sin(angles)], 1)  # ear to ear round the chin (point 8)
    points[17:27] = np.stack([np.linspace(-0.8, 0.8, 10), np.full(10, -0.35)], 1)
    points[27:36] = (0.0, 0.25)
    points[36:42], points[42:48] = (-0.4, -0.1), (0.4, -0.1)
    points[48:68] = (0.0, 0.65)
    points[48], points[54] = (-0.35, 0.65), (0.35, 0.65)
    return points


TEMPLATE = _template()
WIDTH, HEIGHT, SIDE = 200, 150, 64
MAGENTA, GREEN = (255, 0, 255), (0, 255, 0)


def _noise() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _face(cx: float, cy: float, scale: float, cfg: MaskConfig, colour=None) -> FaceInFrame:
    """The template face at (cx, cy) with half-width `scale` px and its FFHQ quad; edited to a flat `colour`."""
    points = TEMPLATE * scale + (cx, cy)
    quad = quads_from_axes(*quad_axes(points))
    if colour is None:
        return FaceInFrame(points, quad)
    mask = landmark_hull_mask(to_crop_coords(points, quad, SIDE), SIDE, cfg.brow_lift)
    return FaceInFrame(points, quad, np.full((SIDE, SIDE, 3), colour, np.uint8), mask)


def _region(face: FaceInFrame, cfg: MaskConfig) -> np.ndarray:
    """The face's landmark hull in the frame, bool [H, W]."""
    region, (x0, y0, x1, y1) = landmark_hull_region(face.points, cfg.brow_lift, WIDTH, HEIGHT)
    full = np.zeros((HEIGHT, WIDTH), bool)
    full[y0:y1, x0:x1] = region
    return full


def test_hull_region_is_the_hull_mask_rasterised_in_the_frame():
    lift = MaskConfig().brow_lift
    inside = TEMPLATE * 12 + (40, 30)
    region, (x0, y0, x1, y1) = landmark_hull_region(inside, lift, WIDTH, HEIGHT)
    assert region.size < WIDTH * HEIGHT / 10 and 0.4 < region.mean() < 0.9  # the face's box only
    full = np.zeros((HEIGHT, WIDTH), bool)
    full[y0:y1, x0:x1] = region
    assert np.array_equal(full, landmark_hull_mask(inside, WIDTH, lift)[:HEIGHT])
    cut = TEMPLATE * 12 + (-5, 30)  # half outside the frame's left edge
    region, (x0, y0, x1, y1) = landmark_hull_region(cut, lift, WIDTH, HEIGHT)
    assert x0 == 0 and region.any()
    full[:] = False
    full[y0:y1, x0:x1] = region
    assert np.array_equal(full, landmark_hull_mask(cut + (50, 0), WIDTH + 50, lift)[:HEIGHT, 50:])
    assert landmark_hull_region(TEMPLATE * 12 + (-40, 30), lift, WIDTH, HEIGHT)[0].size == 0


@pytest.mark.parametrize("mode", ["feather", "square"])
def test_one_edited_face_pastes_exactly_as_paste_face(mode):
    cfg = MaskConfig(paste_mode=mode)
    frame = _noise()
    edited = _face(100, 75, 24, cfg, MAGENTA)
    expected = paste_face(frame, edited.crop, edited.quad, edited.mask, cfg)
    assert (expected != frame).any()
    assert np.array_equal(paste_faces(frame, [edited], cfg), expected)
    smaller = _face(80, 80, 12, cfg)  # an unedited face behind it changes nothing
    assert (_region(smaller, cfg) & _region(edited, cfg)).any()
    assert np.array_equal(paste_faces(frame, [smaller, edited], cfg), expected)


def test_no_edited_face_gives_a_copy_of_the_frame():
    cfg = MaskConfig()
    frame = _noise()
    for faces in ([], [_face(60, 75, 12, cfg), _face(130, 75, 24, cfg)]):
        out = paste_faces(frame, faces, cfg)
        assert np.array_equal(out, frame) and not np.shares_memory(out, frame)


@pytest.mark.parametrize("mode", ["feather", "square"])
def test_an_edit_never_paints_over_a_larger_unedited_face(mode):
    cfg = MaskConfig(paste_mode=mode)
    frame = _noise()
    small, large = _face(100, 80, 12, cfg, MAGENTA), _face(125, 75, 24, cfg)
    near = _region(large, cfg)
    assert (_region(small, cfg) & near).sum() > 50  # the faces overlap
    alone = paste_face(frame, small.crop, small.quad, small.mask, cfg)
    assert (alone[near] != frame[near]).any()  # a plain paste would reach into the larger face
    out = paste_faces(frame, [large, small], cfg)
    assert np.array_equal(out[near], frame[near])
    landed = _region(small, cfg) & ~near
    assert np.abs(out[landed].astype(int) - MAGENTA).mean() < 20  # the edit is there outside the larger face


def test_the_larger_edited_face_is_pasted_last():
    cfg = MaskConfig(paste_mode="feather")
    frame = _noise()
    small, large = _face(100, 80, 12, cfg, MAGENTA), _face(125, 75, 24, cfg, GREEN)
    out = paste_faces(frame, [large, small], cfg)
    assert np.array_equal(out, paste_faces(frame, [small, large], cfg))  # the order given does not matter
    near = _region(large, cfg)
    assert np.abs(out[near].astype(int) - GREEN).mean() < 20
    # Just outside the larger face's hull its feathered edge still blends in: over the smaller edit, which was
    # pasted first (pasted after, the smaller face would leave pure magenta there).
    edge = _in_frame(feather(large.mask, cfg.dilate_px, cfg.blur_px), large.quad, frame) & ~near
    over = edge & cv2.erode(_region(small, cfg).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert over.sum() > 20
    assert out[over][:, 1].mean() > 100


@pytest.mark.parametrize("mode", ["feather", "square"])
def test_faces_apart_paste_as_separate_pastes(mode):
    cfg = MaskConfig(paste_mode=mode)
    frame = _noise()
    left, right = _face(50, 75, 12, cfg, MAGENTA), _face(150, 75, 20, cfg, GREEN)
    expected = paste_face(paste_face(frame, left.crop, left.quad, left.mask, cfg),
                          right.crop, right.quad, right.mask, cfg)
    out = paste_faces(frame, [right, left], cfg)
    assert np.array_equal(out, expected)
    for face, colour in ((left, MAGENTA), (right, GREEN)):
        assert np.abs(out[_region(face, cfg)].astype(int) - colour).mean() < 20


def test_a_face_is_edited_with_both_crop_and_mask():
    face = _face(100, 75, 24, MaskConfig(), MAGENTA)
    with pytest.raises(ValueError, match="both"):
        FaceInFrame(face.points, face.quad, crop=face.crop)
