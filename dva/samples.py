"""Sample face clips made from the real photos that ship offline, for tests and for the demo.

No face video ships with any package, so clips are synthesised: a photo of a real person (scikit-image's
astronaut, Eileen Collins; matplotlib's Grace Hopper) moves over a moving background with smooth head motion
(translation, in-plane rotation, scale), optional blinks made by warping the eyelids shut, optional portrait
rotation metadata and an optional sine-wave audio track. Clips are deterministic for given arguments.
"""

from __future__ import annotations

import math
import os
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from dva.video.encode import VideoWriter


@dataclass(frozen=True)
class Portrait:
    """Where the face is in a shipped photo: facts measured once with dlib's HOG detector and 68-point predictor."""

    face_centre: tuple[float, float]  # centre of the detector box, photo pixels
    face_size: float  # side of the detector box
    eyes: tuple[tuple[float, float], tuple[float, float]]  # centres of the two eyes
    eye_width: float
    eye_opening: float  # eyelid-to-eyelid height of the open eye


PORTRAITS = {
    "astronaut": Portrait((222.5, 126.5), 88.0, ((203.2, 101.5), (246.8, 104.0)), 17.0, 6.0),
    "grace_hopper": Portrait((268.5, 244.5), 216.0, ((222.2, 197.2), (310.8, 191.5)), 33.0, 10.0),
}

AUDIO_RATE = 44100


@lru_cache(maxsize=None)
def load_photo(person: str) -> np.ndarray:
    """The RGB uint8 photo of `person` (a key of PORTRAITS)."""
    if person == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    if person == "grace_hopper":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    raise ValueError(f"unknown sample person {person!r}; known: {', '.join(PORTRAITS)}")


def _blink_amount(t: float, duration: float, blink_seconds: float = 0.25) -> float:
    """0 (open) .. 1 (shut): one blink centred in every 3-second stretch (the middle of a shorter clip)."""
    period = min(duration, 3.0)
    phase = (t % period) - period / 2
    return max(0.0, 1.0 - abs(phase) / (blink_seconds / 2))


def close_eyes(photo: np.ndarray, portrait: Portrait, amount: float) -> np.ndarray:
    """Warp both eyelids towards each eye's centre line; `amount` 1 shuts the eyes.

    Every pixel near an eye samples from further away from the eye's centre line, so the lids slide over the eye
    and meet at the line. The push fades to zero at the edge of a box around each eye, so the warp is seamless.
    """
    if amount <= 0:
        return photo
    height, width = photo.shape[:2]
    map_x, map_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    reach_x, reach_y = portrait.eye_width * 0.75, portrait.eye_opening * 2.5
    push = amount * (portrait.eye_opening / 2 + 1.0)
    for ex, ey in portrait.eyes:
        dx = (map_x - ex) / reach_x
        dy = (map_y - ey) / reach_y
        inside = (np.abs(dx) < 1) & (np.abs(dy) < 1)
        weight = np.where(inside, (1 - dx**2) * (1 - np.abs(dy)) ** 2, 0.0)
        map_y = map_y + (np.sign(dy) * push * weight).astype(np.float32)
    return cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _background(width: int, height: int, t: float, seed: int) -> np.ndarray:
    """A smooth, textured, face-free pattern that drifts over time (so background pixels change every frame)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for _ in range(4):
        freq = rng.uniform(0.01, 0.05, size=2)
        velocity = rng.uniform(-40, 40, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        colour = rng.uniform(0.2, 1.0, size=3)
        wave_ = np.sin(2 * np.pi * (freq[0] * (xs - velocity[0] * t) + freq[1] * (ys - velocity[1] * t)) + phase)
        image += wave_[..., None] * colour
    image = 127.5 + 127.5 * image / 4
    return np.clip(image, 0, 255).astype(np.uint8)


def _head_pose(t: float, motion: float) -> tuple[float, float, float, float]:
    """(dx, dy) as fractions of the frame, rotation in degrees, scale factor: smooth and non-periodic-looking."""
    dx = 0.06 * motion * math.sin(2 * math.pi * t / 2.0)
    dy = 0.04 * motion * math.sin(2 * math.pi * t / 2.7 + 1.0)
    angle = 8.0 * motion * math.sin(2 * math.pi * t / 3.0 + 0.5)
    scale = 1.0 + 0.06 * motion * math.sin(2 * math.pi * t / 2.5 + 2.0)
    return dx, dy, angle, scale


def _paint_person(frame: np.ndarray, person: str, centre: tuple[float, float], face_px: float, angle: float,
                  blink: float) -> np.ndarray:
    """`frame` (float32) with the person's head and shoulders blended in, face box `face_px` wide at `centre`."""
    portrait = PORTRAITS[person]
    photo = close_eyes(load_photo(person), portrait, blink)
    zoom = face_px / portrait.face_size
    matrix = cv2.getRotationMatrix2D(portrait.face_centre, angle, zoom)
    matrix[:, 2] += np.asarray(centre) - portrait.face_centre
    shrink = 1.0
    if zoom < 0.75:  # shrink first so the warp does not alias
        shrink = zoom
        photo = cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([1 / shrink, 1 / shrink, 1.0])
    size = (frame.shape[1], frame.shape[0])
    sprite = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    # A soft oval around head and shoulders, so no photo edge shows.
    alpha = np.zeros(photo.shape[:2], np.float32)
    head = (portrait.face_centre[0] * shrink, (portrait.face_centre[1] + 0.15 * portrait.face_size) * shrink)
    axes = (portrait.face_size * shrink, portrait.face_size * 1.3 * shrink)
    cv2.ellipse(alpha, (round(head[0]), round(head[1])), (round(axes[0]), round(axes[1])), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, 0.08 * portrait.face_size * shrink))
    alpha = cv2.warpAffine(alpha, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    return frame * (1 - alpha) + sprite.astype(np.float32) * alpha


def render_frame(
    people: Sequence[str | None],
    size: tuple[int, int],
    t: float,
    *,
    duration: float,
    motion: float = 1.0,
    face_scale: float = 0.45,
    blinks: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """One upright RGB frame at time `t`: the background, then each person.

    The first person is centred (on the left when there is company); each further one is 0.75x smaller, right.
    A None in `people` is an absent person who keeps their place, so the others stay where they were.
    """
    width, height = size
    frame = _background(width, height, t, seed).astype(np.float32)
    dx, dy, angle, scale = _head_pose(t, motion)
    blink = _blink_amount(t, duration) if blinks else 0.0
    for index, person in enumerate(people):
        if person is None:
            continue
        across = 0.5 if len(people) == 1 else (0.3 if index == 0 else 0.78)
        centre = (width * (across + dx), height * (0.5 + dy))
        face_px = face_scale * 0.75**index * min(width, height) * scale
        frame = _paint_person(frame, person, centre, face_px, angle, blink)
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def _write_tone(path: Path, seconds: float) -> None:
    """A mono 16-bit WAV: a 440 Hz tone with a slow 3 Hz tremolo, so audio sync problems are audible."""
    t = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    signal = 0.3 * np.sin(2 * np.pi * 440 * t) * (0.75 + 0.25 * np.sin(2 * np.pi * 3 * t))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(AUDIO_RATE)
        out.writeframes((signal * 32767).astype("<i2").tobytes())


def _person_ranges(face_range, count: int, frames: int) -> list[tuple[int, int]]:
    """One (start, stop) per person from make_sample_clip's `face_range` (one range for all, or one per person)."""
    if face_range is None:
        return [(0, frames)] * count
    if all(isinstance(bound, int) for bound in face_range):
        return [tuple(face_range)] * count
    if len(face_range) != count:
        raise ValueError(f"face_range gives {len(face_range)} ranges for {count} person(s): give one (or None) "
                         "per person")
    return [(0, frames) if one is None else tuple(one) for one in face_range]


def make_sample_clip(
    path: str | os.PathLike,
    person: str | Sequence[str] = "astronaut",
    *,
    frames: int = 16,
    fps: float | Fraction = 25,
    size: tuple[int, int] = (320, 240),
    motion: float = 1.0,
    face_scale: float = 0.45,
    blinks: bool = False,
    audio: bool = False,
    rotation: int = 0,
    face_range: tuple[int, int] | Sequence[tuple[int, int] | None] | None = None,
    seed: int = 0,
    crf: int = 18,
) -> str:
    """Write an H.264 mp4 sample clip and return its path.

    person: one name of PORTRAITS, or several (the first is the largest face); () for a clip without a face.
    size: upright (width, height); odd sizes are allowed. face_scale: face box side / min(width, height).
    rotation: 0, 90, 180 or 270 -- frames are stored turned so a player must rotate them this far clockwise (the
    display matrix a phone writes for portrait video); decoders that honour it get the upright frames back.
    face_range: (start, stop) frame indices where the people are visible; the other frames show background only.
    Or one (start, stop) or None (the whole clip) per person, e.g. [None, (24, 48)]: the second person enters at
    frame 24; everyone keeps their place in the frame while another is absent.
    audio: add a sine-wave AAC track as long as the video.
    """
    people = [person] if isinstance(person, str) else list(person)
    for name in people:
        if name not in PORTRAITS:
            raise ValueError(f"unknown sample person {name!r}; known: {', '.join(PORTRAITS)}")
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90, got {rotation}")
    fps = Fraction(fps).limit_denominator(1001)
    duration = frames / float(fps)
    ranges = _person_ranges(face_range, len(people), frames)
    with tempfile.TemporaryDirectory(prefix="dva-sample-") as tmp:
        tone = None
        if audio:
            tone = Path(tmp) / "tone.wav"
            _write_tone(tone, duration)
        with VideoWriter(path, fps, audio_from=str(tone) if tone else None, crf=crf, rotation=rotation % 360) as out:
            for index in range(frames):
                visible = [name if start <= index < stop else None for name, (start, stop) in zip(people, ranges)]
                frame = render_frame(visible, size, index / float(fps), duration=duration, motion=motion,
                                     face_scale=face_scale, blinks=blinks, seed=seed)
                out.write(np.ascontiguousarray(np.rot90(frame, (rotation % 360) // 90)))
    return str(path)


def write_sample_set(folder: str | os.PathLike, *, frames: int = 48, fps: float = 25,
                     size: tuple[int, int] = (480, 360)) -> list[str]:
    """Write the demo set: each person with audio and blinks, a portrait-rotated clip and a two-person clip."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(frames=frames, fps=fps, size=size)
    return [
        make_sample_clip(folder / "astronaut.mp4", "astronaut", audio=True, blinks=True, **common),
        make_sample_clip(folder / "grace_hopper.mp4", "grace_hopper", audio=True, blinks=True, **common),
        make_sample_clip(folder / "astronaut_portrait.mp4", "astronaut", rotation=90, **common),
        make_sample_clip(folder / "two_people.mp4", ("grace_hopper", "astronaut"), audio=True, **common),
    ]
