"""Editing a video's identity code z̄_id (SPEC §3.6): attribute classifiers, CLIP-optimised directions, edit specs.

Each way of editing yields a small file (safetensors, local or s3://) tied to the identity encoder it was made with,
so any edit job can apply it: `AttributeClassifier` (classifier.py), `EditDirection` (direction.py, written by the
CLIP optimisation in clip_direction.py). `edits.py` parses the edit specs a job is given; `faces.py` says which of a
video's face tracks an edit changes.
"""

from dva.editing.artifact import identity_encoder_id, l2norm
from dva.editing.classifier import (
    AttributeClassifier,
    apply_classifier_edit,
    embed_images,
    parse_celeba_attributes,
    train_attribute_classifier,
    train_classifier_from_annotations,
    zid_statistics,
)
from dva.editing.clip_direction import (
    ClipDirectionalLoss,
    ClipEditConfig,
    ClipEditResult,
    load_clip,
    load_clip_edit_config,
    optimise_clip_direction,
)
from dva.editing.direction import EditDirection, apply_direction
from dva.editing.edits import EditSpec, edited_identity, parse_edit, parse_edits
from dva.editing.faces import FaceSelector, parse_faces, select_tracks

__all__ = [
    "AttributeClassifier", "ClipDirectionalLoss", "ClipEditConfig", "ClipEditResult", "EditDirection", "EditSpec",
    "FaceSelector", "apply_classifier_edit", "apply_direction", "edited_identity", "embed_images",
    "identity_encoder_id", "l2norm", "load_clip", "load_clip_edit_config",
    "optimise_clip_direction", "parse_celeba_attributes", "parse_edit", "parse_edits", "parse_faces", "select_tracks",
    "train_attribute_classifier", "train_classifier_from_annotations", "zid_statistics",
]
