"""Which of a video's face tracks an edit addresses: the `@SELECTOR` of an edit spec (`faces:` in YAML).

    all             every track (the default)
    largest         the track with the largest mean face size
    N               track N (0-based, in the order of the video's tracks)
    match:URI       the tracks whose mean identity is within `faces_match_min_cosine` of the reference image or video

Tracks are compared by the cosine of their mean identity codes z̄_id (`dva.face.tracks.identity_cosines`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from dva.errors import ConfigError, NoFaceError
from dva.face.tracks import identity_cosines

VALID_SELECTORS = "all | largest | N (a track index: 0, 1, ...) | match:URI (a reference image or video)"


@dataclass(frozen=True)
class FaceSelector:
    kind: str  # "all", "largest", "index" or "match"
    index: Optional[int] = None  # kind == "index"
    uri: Optional[str] = None  # kind == "match": the reference whose identity a track must match

    def __str__(self) -> str:
        """The text form; `parse_faces(str(selector)) == selector`."""
        if self.kind == "index":
            return str(self.index)
        if self.kind == "match":
            return f"match:{self.uri}"
        return self.kind


def _selector_or_none(text: str) -> Optional[FaceSelector]:
    """The selector `text` spells, or None when it spells none (no error: a caller tries candidate splits)."""
    if text in ("all", "largest"):
        return FaceSelector(text)
    if re.fullmatch(r"[0-9]+", text):
        return FaceSelector("index", index=int(text))
    if text.startswith("match:") and text[len("match:"):].strip():
        return FaceSelector("match", uri=text[len("match:"):].strip())
    return None


def split_selector(text: str) -> tuple[str, Optional[FaceSelector]]:
    """`text` split at its last '@' that starts a selector running to the end: (before, selector), or (text, None).

    URIs may hold '@' and ':' (`s3://b/x@v2.safetensors`): an '@' whose remainder is no selector is part of the text.
    """
    at = text.rfind("@")
    while at >= 0:
        selector = _selector_or_none(text[at + 1:])
        if selector is not None:
            return text[:at], selector
        at = text.rfind("@", 0, at)
    return text, None


def parse_faces(text: str) -> FaceSelector:
    """The selector of `text` (see the module docstring); a ConfigError lists the valid forms."""
    selector = _selector_or_none(str(text).strip())
    if selector is None:
        raise ConfigError(f"faces {text!r} is not a face selector; valid: {VALID_SELECTORS}")
    if selector.kind == "match":
        # the string form `SPEC@match:URI` is split at its last '@' that starts a selector: one inside the URI
        # would be taken for the split, and the edit would read back as another
        _, inner = split_selector(selector.uri)
        if inner is not None:
            raise ConfigError(f"faces {text!r}: the reference URI holds '@{inner}', which reads as a face selector; "
                              "rename or move the reference")
    return selector


def select_tracks(selector: FaceSelector, sizes: Sequence[float], identities: np.ndarray,
                  reference: Optional[np.ndarray], min_cosine: float) -> list[int]:
    """The sorted indices of the tracks `selector` addresses.

    `sizes`: each track's mean face size; `identities`: [T, D] each track's mean z_id; `reference`: the match
    reference's z_id ([D]), used only by `match:`. `match:` may address no track: the caller decides what that means.
    A track index past the last track raises NoFaceError (the caller adds the video's name).
    """
    identities = np.asarray(identities)
    count = len(sizes)
    if identities.ndim != 2 or identities.shape[0] != count:
        raise ValueError(f"identities {identities.shape} must be [T, D] with T = {count} tracks (one per size)")
    if selector.kind == "all":
        return list(range(count))
    if selector.kind == "largest":
        return [int(np.argmax(sizes))] if count else []
    if selector.kind == "index":
        if selector.index >= count:
            raise NoFaceError(f"edit addresses face {selector.index} but the video has {count} "
                              f"track{'' if count == 1 else 's'} (faces are numbered from 0)")
        return [selector.index]
    if reference is None:
        raise ValueError(f"faces {selector}: pass the reference's z_id to select matching tracks")
    cosine = identity_cosines(identities, np.asarray(reference).reshape(1, -1))[:, 0]
    return [int(i) for i in np.flatnonzero(cosine >= min_cosine)]

