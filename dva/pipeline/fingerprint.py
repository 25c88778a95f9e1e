"""What a finished (video, edit) was made from: the pair's fingerprint, kept in its manifest row (`fingerprint`).

A rerun skips a pair only when its row carries the fingerprint the job gives it now (`dva.runtime.manifest.
completed`). It is the stored latents' fingerprint (`dva.latents.LatentKey.fingerprint`: the version of the input,
the weights and every setting x_T depends on) and a digest of what the edit's output depends on beyond them:

- the content of each file the edit spec references: the job's `classifier` for a `classifier:` edit, the file of
  a `direction:` edit, the reference image or video of an `identity:` edit and of an `@match:URI` selector (with
  `faces_match_min_cosine`); for a `clip:` edit the `clip_edit` settings its direction is optimised with, the CLIP
  weights by their content (the key of the direction cache, `dva.editing.clip_direction.direction_settings`);
- the settings of stage C that change pixels: `face.mask` (paste region and blending). The encoder's settings are
  `dva.video.encode.VideoWriter`'s defaults, which no job setting changes.

A file replaced at the same location gives the pair another fingerprint; the same bytes elsewhere do not. An
encode-only row (edit "") carries the latents' fingerprint alone.
"""

from __future__ import annotations

import hashlib

from dva.config import to_yaml
from dva.editing.clip_direction import direction_settings
from dva.editing.edits import EditSpec, parse_edit
from dva.errors import StorageError
from dva.latents import LatentKey
from dva.pipeline.config import EditJobConfig
from dva.storage import content_digest


class PairFingerprints:
    """The fingerprints of a job's pairs, `fingerprints(source_stamp, edit)`. Made once per job on the driver: each
    referenced file is digested once and each edit's digest made once, however many videos share it."""

    def __init__(self, cfg: EditJobConfig, key: LatentKey):
        self.cfg, self.key = cfg, key
        self._stage_c = f"face.mask={to_yaml(cfg.face.mask)}"
        self._files: dict[str, str] = {}
        self._edits: dict[str, str] = {}

    def __call__(self, source_stamp: str, edit: str) -> str:
        latents = self.key.fingerprint(source_stamp)
        if not edit:
            return latents
        return hashlib.sha256(f"{latents}/{self.edit_digest(edit)}".encode()).hexdigest()[:16]

    def edit_digest(self, edit: str) -> str:
        """A digest of the files and settings the output of `edit` depends on beyond the latents."""
        if edit not in self._edits:
            text = "\n".join([self._stage_c, *self._references(parse_edit(edit))])
            self._edits[edit] = hashlib.sha256(text.encode()).hexdigest()
        return self._edits[edit]

    def _references(self, spec: EditSpec) -> list[str]:
        parts = []
        if spec.kind == "classifier":
            parts.append(f"classifier={self._file(self.cfg.classifier)}")
        elif spec.kind in ("direction", "identity"):
            parts.append(f"{spec.kind}={self._file(spec.uri)}")
        elif spec.kind == "clip":
            parts.append(f"clip_edit={direction_settings(self.cfg.clip_edit, self._file)}")
        selector = spec.face_selector
        if selector.kind == "match":
            parts.append(f"match={self._file(selector.uri)} min_cosine={self.cfg.faces_match_min_cosine}")
        return parts

    def _file(self, uri: str | None) -> str:
        if not uri:
            return "none"  # stage A fails the pair and records why (no classifier file configured)
        if uri not in self._files:
            try:
                self._files[uri] = content_digest(uri)
            except StorageError:  # missing or unreadable: the pair fails where the file is read, and is recorded so
                self._files[uri] = "unreadable"
        return self._files[uri]
