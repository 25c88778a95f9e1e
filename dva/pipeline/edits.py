"""Turning a video's edit specs into the z_id each edit decodes with (SPEC §3 step 6), once per video.

`reconstruct` decodes with the video's own mean z_id; `identity:URI` with the mean z_id of another person's image
or video (the decomposed-features swap); classifier and direction edits shift the mean z_id with a stored
artefact from `dva.editing`. Everything is vector maths on [D] vectors: it runs in stage A, never per frame.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dva.editing.artifact import identity_encoder_id
from dva.editing.classifier import AttributeClassifier
from dva.editing.direction import EditDirection
from dva.editing.edits import EditSpec, edited_identity, parse_edit, parse_edits
from dva.errors import ConfigError, NoFaceError
from dva.face.align import track_quads
from dva.face.warp import crop_face
from dva.face.crop_video import align_video
from dva.pipeline.prepare import VideoTask, crops_to_tensor, encode_codes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def parse_job_edits(specs: Sequence[str]) -> list[str]:
    """Check every spec of the job (a typo fails before Ray starts); return them in canonical string form."""
    try:
        parsed_all = parse_edits(list(specs))
    except ConfigError as err:
        raise ConfigError(f"config key `edits`: {err}") from None
    out = []
    for i, parsed in enumerate(parsed_all):
        if parsed.kind == "clip":
            raise ConfigError(
                f"config key `edits[{i}]`: CLIP edits are optimised per video before the job; make a direction "
                "file with `dva.editing.clip_direction.optimise_clip_direction` and use direction:URI:SCALE")
        out.append(str(parsed))
    return out


class EditResolver:
    """Callable (edit specs, mean z_id) → z_ids [K, D]. Loads each artefact or reference identity once."""

    def __init__(self, model, cfg, landmarker):
        self.model = model
        self.cfg = cfg
        self.landmarker = landmarker
        self.encoder_id = identity_encoder_id(model)
        self._identities: dict[str, np.ndarray] = {}
        self._directions: dict[str, EditDirection] = {}
        self._classifier: AttributeClassifier | None = None

    def reference_identity(self, uri: str) -> np.ndarray:
        """Mean z_id of the face in an image or video (aligned exactly as edit inputs are)."""
        if uri not in self._identities:
            if uri.lower().endswith(IMAGE_SUFFIXES):
                self._identities[uri] = self._image_identity(uri)
            else:
                task = VideoTask(uri, "", "", [])
                track = align_video(uri, self.landmarker, self.cfg.face)
                z_id, _ = encode_codes(task, track, self.model.encode_identity, self.model.encode_landmarks,
                                       self.cfg.chunk_frames)
                self._identities[uri] = z_id.mean(axis=0)
        return self._identities[uri]

    def _image_identity(self, uri: str) -> np.ndarray:
        import cv2

        from dva.storage import open_file

        with open_file(uri) as f:
            data = np.frombuffer(f.read(), np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f"identity reference {uri!r} is not a readable image")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = self.landmarker.detect(image)
        if not faces:
            raise NoFaceError(f"identity reference {uri!r}: no face found; use a clear frontal photo")
        face = max(faces, key=lambda f: f.area)
        quad = track_quads(face.points[None].astype(np.float64), self.cfg.face.align)[0]
        crop = crop_face(image, quad, self.cfg.face.align.crop_size)
        return self.model.encode_identity(crops_to_tensor(crop[None])).cpu().numpy()[0]

    def classifier(self) -> AttributeClassifier:
        if self._classifier is None:
            if not self.cfg.classifier:
                raise ConfigError("config key `classifier`: classifier edits need the attribute classifier file "
                                  "(made by `dva train-classifier`)")
            self._classifier = AttributeClassifier.load(self.cfg.classifier)
        return self._classifier

    def _z_edit(self, spec: EditSpec, z_mean: np.ndarray) -> np.ndarray:
        kwargs = {}
        if spec.kind == "identity":
            kwargs["reference_z_id"] = torch.from_numpy(self.reference_identity(spec.uri))
        elif spec.kind == "classifier":
            kwargs["classifier"] = self.classifier()
        elif spec.kind == "direction":
            if spec.uri not in self._directions:
                self._directions[spec.uri] = EditDirection.load(spec.uri)
            kwargs["direction"] = self._directions[spec.uri]
        z = edited_identity(spec, torch.from_numpy(z_mean).float(), encoder_id=self.encoder_id, **kwargs)
        return z.cpu().numpy()

    def __call__(self, specs: Sequence[str], z_mean: np.ndarray) -> np.ndarray:
        if not specs:
            return np.zeros((0, z_mean.shape[0]), np.float32)
        return np.stack([self._z_edit(parse_edit(s), z_mean) for s in specs]).astype(np.float32)
