"""Turning a video's edit specs into the z_id each edit decodes with (SPEC §3 step 6), once per video, in stage A.

`reconstruct` decodes with the video's own mean z_id; `identity:URI` with the mean z_id of another person's image
or video (the decomposed-features swap); classifier and direction edits shift the mean z_id with a stored
artefact from `dva.editing`: vector maths on [D] vectors, never per frame.

`clip:"SOURCE":"TARGET":SCALE` first optimises a direction Δ on the video's own frames (`clip_edit.frames`, frame 0
by default: their aligned crops and training masks, cropped again from the face track) with the whole model, UNet
included, then decodes with l2norm(z̄ + SCALE·Δ). Directions are cached under `clip_edit.output_prefix` (default
`<output>/.directions/`) by `optimise_clip_direction`, keyed by the model, the crops and masks, the video id, the
prompts and the settings: the same text edit of the same video is optimised once, whatever the scale and however
many jobs ask for it. Each clip edit leaves a small record per face next to its work files (`direction.json`: the
file's URI and whether it came from the cache) that stage C copies into the manifest row.

Which faces an edit applies to is the edit's `@FACES` selector (`dva.editing.faces`): every track by default, the
largest, one by index, or those whose mean z_id matches a reference photo or video (`match:URI`, cosine at least
`faces_match_min_cosine`). Each addressed person's edit starts from that person's own mean z_id.

Where the time goes: a job that keeps latents (`store_latents` and `reuse_latents`, the defaults) runs in two
passes. Pass 1 is the pipeline without the clip edits (a video with only clip edits is inverted and its x_T
stored); as soon as stage B returns a video's first chunk, the driver starts a Ray task that optimises that video's
directions from the face track stage A stored (`stages.optimise_video_clip_edits`), so the optimisation runs while
the rest of the video's frames are inverted. Pass 2 decodes the clip edits from the stored x_T (N UNet calls per
frame, as any further edit) with the directions read from the cache. A job that keeps no latents optimises in
stage A, before the video's first chunk leaves it: then the optimisation overlaps only other videos' work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from typing import Sequence

import numpy as np
import torch

from dva.editing.artifact import identity_encoder_id
from dva.editing.classifier import AttributeClassifier
from dva.editing.clip_direction import (ClipDirectionalLoss, ClipEditResult, hash_model, load_clip,
                                       optimise_clip_direction)
from dva.editing.direction import EditDirection
from dva.editing.edits import EditSpec, edited_identity, parse_edit, parse_edits
from dva.errors import ConfigError, DvaError, MissingWeightsError, NoFaceError, VideoError
from dva.face.record import AlignedTrack
from dva.face.photo import align_photo
from dva.face.warp import iter_crops
from dva.face.crop_video import align_video
from dva.editing.faces import select_tracks
from dva.face.tracks import identity_cosines
from dva.frontend import VideoTask, encode_face_codes, training_masks
from dva.runtime.cluster import on_device
from dva.crops import crops_to_tensor
from dva.storage import exists, join, open_file, redact, shown, write_bytes_atomic
from dva.video import iter_frames

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CLIP_WEIGHTS_KEY = "clip_edit.clip.weights"
log = logging.getLogger("dva.edit")


def parse_job_edits(specs: Sequence[str]) -> list[str]:
    """Check every spec of the job (a typo fails before Ray starts); return them in canonical string form."""
    try:
        return [str(parsed) for parsed in parse_edits(list(specs))]
    except ConfigError as err:
        raise ConfigError(f"config key `edits`: {err}") from None


def has_clip_edits(specs: Sequence[str]) -> bool:
    return any(parse_edit(s).kind == "clip" for s in specs)


def check_clip_weights(cfg) -> None:
    """Before Ray starts, when some video has a clip edit to do: the CLIP weight file is configured and exists."""
    weights = cfg.clip_edit.clip.weights
    if not weights:
        raise ConfigError(
            f"config key `{CLIP_WEIGHTS_KEY}`: clip:\"SOURCE\":\"TARGET\":SCALE edits need open_clip "
            f"{cfg.clip_edit.clip.name} weights; set {CLIP_WEIGHTS_KEY}=/path/to/open_clip_pytorch_model.bin "
            "(a local path or s3:// URI; nothing is downloaded), or drop the clip edits")
    if not exists(weights):
        raise MissingWeightsError(redact(weights), CLIP_WEIGHTS_KEY)


def load_job_classifier(cfg) -> AttributeClassifier:
    """The attribute classifier file of a job with classifier edits (`classifier` key)."""
    if not cfg.classifier:
        raise ConfigError("config key `classifier`: classifier edits need the attribute classifier file "
                          "(made by `dva train-classifier`)")
    return AttributeClassifier.load(cfg.classifier)


def direction_record_uri(output: str, video_id: str, edit: str, face: int) -> str:
    """Where stage A notes which direction file a clip edit used for a face, beside stage B's chunks of it."""
    return join(output, ".work", video_id, parse_edit(edit).edit_id, f"face{face}", "direction.json")


def write_direction_record(uri: str, direction_uri: str | None, cached: bool) -> None:
    write_bytes_atomic(uri, json.dumps({"uri": direction_uri, "cached": cached}).encode())


def read_direction_record(output: str, video_id: str, edit: str, faces: Sequence[int]) -> dict:
    """{"uri": ..., "cached": bool} for a clip edit stage A resolved (the direction files of the faces `faces`,
    joined by "; "; cached when every one came from the cache); {} for any other edit."""
    records = []
    for face in faces:
        uri = direction_record_uri(output, video_id, edit, face) if edit else None
        if uri and exists(uri):
            with open_file(uri) as f:
                records.append(json.loads(f.read()))
    if not records:
        return {}
    return {"uri": "; ".join(dict.fromkeys(str(r["uri"]) for r in records)),
            "cached": all(r["cached"] for r in records)}


class VideoCrops:
    """The aligned crops of some of a video's frames, cropped again from its face track on first use.

    Indexable like the whole video (`len` = its frame count, negative indices from the end), as
    `optimise_clip_direction` expects; only the frames in `indices` are decoded, in one pass that stops after the
    last of them.
    """

    def __init__(self, uri: str, track: AlignedTrack, indices: Sequence[int], config_key: str):
        n = len(track)
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise ConfigError(f"config key `{config_key}`: frame indices {bad} are out of range for this video's "
                              f"{n} frames")
        self.uri, self.track = uri, track
        self.indices = [i % n for i in indices]
        self._crops: dict[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.track)

    def crops(self) -> dict[int, np.ndarray]:
        if self._crops is None:
            wanted, last, crops = set(self.indices), max(self.indices), {}
            with contextlib.closing(iter_frames(self.uri)) as frames:
                for i, crop in enumerate(iter_crops(frames, self.track.quads, self.track.crop_size)):
                    if i in wanted:
                        crops[i] = crop
                    if i == last:
                        break
            if len(crops) != len(wanted):
                raise VideoError(f"{self.uri}: frames {sorted(wanted - set(crops))} could not be decoded again")
            self._crops = crops
        return self._crops

    def __getitem__(self, index: int) -> torch.Tensor:
        return crops_to_tensor(self.crops()[index % len(self)][None])[0]

    def masks(self, model, brow_lift: float) -> torch.Tensor:
        """The training masks of the frames in `indices`, [F, 1, S, S] float."""
        device = next(model.parameters()).device
        masks = [training_masks(model, self.track, self[i][None].to(device), i, brow_lift) for i in self.indices]
        return torch.from_numpy(np.concatenate(masks)).float()[:, None]


class EditResolver:
    """The job's `dva.frontend.EditPlan`: which faces each edit addresses, and (task, a face's mean z_id, its
    track) → the z_ids [K, D] of the task's edits for that face.

    Loads each artefact, reference identity and CLIP once per actor."""

    def __init__(self, model, cfg, landmarker):
        self.model = model
        self.cfg = cfg
        self.landmarker = landmarker
        self.device = next(model.parameters()).device  # a GPU when the stage has one: references are encoded there
        self.encoder_id = identity_encoder_id(model)
        self._identities: dict[str, np.ndarray] = {}
        self._directions: dict[str, EditDirection] = {}
        self._classifier: AttributeClassifier | None = None
        self._clip: ClipDirectionalLoss | None = None
        self._model_hash: str | None = None
        self.clip_cfg = dataclasses.replace(
            cfg.clip_edit, output_prefix=cfg.clip_edit.output_prefix or join(cfg.output, ".directions"))

    def reference_identity(self, uri: str) -> np.ndarray:
        """Mean z_id of the face in an image or video (aligned exactly as edit inputs are)."""
        if uri not in self._identities:
            if uri.lower().endswith(IMAGE_SUFFIXES):
                self._identities[uri] = self._image_identity(uri)
            else:
                track = align_video(uri, self.landmarker, self.cfg.face)
                [(z_id, _)] = encode_face_codes(uri, [track], on_device(self.model.encode_identity, self.device),
                                                on_device(self.model.encode_landmarks, self.device),
                                                self.cfg.chunk_frames)
                self._identities[uri] = z_id.mean(axis=0)
        return self._identities[uri]

    def _image_identity(self, uri: str) -> np.ndarray:
        import cv2

        with open_file(uri) as f:
            data = np.frombuffer(f.read(), np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f"identity reference {uri!r} is not a readable image")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        crop = align_photo(image, self.landmarker.detect, self.cfg.face.align)
        if crop is None:
            raise NoFaceError(f"identity reference {uri!r}: no face found; use a clear frontal photo")
        return self.model.encode_identity(crops_to_tensor(crop[None]).to(self.device)).cpu().numpy()[0]

    def faces(self, task: VideoTask, tracks: Sequence[AlignedTrack], z_ids: np.ndarray) -> dict[str, list[int]]:
        """The tracks each of the task's edits addresses (its `@FACES` selector); NoFaceError naming the video when
        an edit addresses none."""
        out = {}
        for edit in task.edits:
            selector = parse_edit(edit).face_selector
            reference = self.reference_identity(selector.uri) if selector.kind == "match" else None
            try:
                out[edit] = select_tracks(selector, [t.face_size for t in tracks], z_ids, reference,
                                          self.cfg.faces_match_min_cosine)
            except NoFaceError as err:
                raise NoFaceError(f"{task.uri}: edit {edit}: {err}") from None
            if not out[edit]:
                best = float(identity_cosines(z_ids, reference[None]).max())
                raise NoFaceError(
                    f"{task.uri}: edit {edit}: none of its {len(tracks)} face(s) matches {selector.uri} (best "
                    f"cosine {best:.3f} < faces_match_min_cosine {self.cfg.faces_match_min_cosine})")
        return out

    def classifier(self) -> AttributeClassifier:
        if self._classifier is None:
            self._classifier = load_job_classifier(self.cfg)
        return self._classifier

    def clip_loss(self) -> ClipDirectionalLoss:
        """CLIP, loaded on the model's device the first time a direction is not in the cache; kept for the actor."""
        if self._clip is None:
            self._clip = load_clip(self.clip_cfg.clip, self.clip_cfg.templates, self.device,
                                   config_key="clip_edit.clip")
        return self._clip

    def clip_direction(self, spec: EditSpec, task: VideoTask, track: AlignedTrack) -> ClipEditResult:
        """The direction of a clip spec on this video's frames: from the cache, or optimised and cached now."""
        if self.model.unet is None:
            raise DvaError(f"edit {spec}: stage A was started without the UNet (the job found no clip edits)")
        try:
            frames = VideoCrops(task.uri, track, self.clip_cfg.frames, "clip_edit.frames")
            if self._model_hash is None:  # the weights never change in an actor: hash them once
                self._model_hash = hash_model(self.model, self.encoder_id)
            result = optimise_clip_direction(
                self.model, frames, spec.source, spec.target, self.clip_cfg, clip=self.clip_loss,
                mask=frames.masks(self.model, self.cfg.face.mask.brow_lift), source_id=task.video_id,
                model_hash=self._model_hash)
        except DvaError as err:
            raise DvaError(f"CLIP edit {spec}: {err}") from None
        meta = result.direction.metadata
        log.info("%s [%s]: direction %s %s", shown(task.uri), spec, shown(result.uri),
                 "read from the cache" if result.from_cache else f"optimised in {meta.get('seconds', '?')} s")
        return result

    def _z_edit(self, spec: EditSpec, z_mean: np.ndarray, clip_direction: EditDirection | None) -> np.ndarray:
        kwargs = {}
        if spec.kind == "identity":
            kwargs["reference_z_id"] = torch.from_numpy(self.reference_identity(spec.uri))
        elif spec.kind == "classifier":
            kwargs["classifier"] = self.classifier()
        elif spec.kind == "direction":
            if spec.uri not in self._directions:
                self._directions[spec.uri] = EditDirection.load(spec.uri)
            kwargs["direction"] = self._directions[spec.uri]
        elif spec.kind == "clip":
            kwargs["direction"] = clip_direction
        z = edited_identity(spec, torch.from_numpy(z_mean).float(), encoder_id=self.encoder_id, **kwargs)
        return z.cpu().numpy()

    def __call__(self, task: VideoTask, z_mean: np.ndarray, track: AlignedTrack) -> np.ndarray:
        if not task.edits:
            return np.zeros((0, z_mean.shape[0]), np.float32)
        z_edits, clip_results = [], {}
        for edit in task.edits:
            spec = parse_edit(edit)
            if spec.kind == "clip":  # a second scale of the same prompts finds the first one's file in the cache
                clip_results[edit] = self.clip_direction(spec, task, track)
            z_edits.append(self._z_edit(spec, z_mean, clip_results[edit].direction if edit in clip_results else None))
        for edit, result in clip_results.items():  # only once every edit resolved: a failed video leaves none
            record = direction_record_uri(self.cfg.output, task.video_id, edit, task.face)
            if not exists(record):  # the job's first pass wrote it when it optimised the direction
                write_direction_record(record, result.uri, result.from_cache)
        return np.stack(z_edits).astype(np.float32)
