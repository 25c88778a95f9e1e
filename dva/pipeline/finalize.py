"""Stage C, per (video, edit) on CPU: paste the edited crops back into the original frames, encode, commit.

The source is decoded once more and the edited crop chunks of each addressed face track are read in frame order, one
chunk at a time; every face of the frame is pasted back in order of size (`dva.face.paste.paste_faces`). Every
output frame is written at its source frame's time (variable frame rates stay as they were), with the source's
audio (and its offset to the video) and colour tags; the video appears at its final key only when complete.
When the model has a face parser, its paste mask of each original crop (SPEC §1.5) says where the edit goes;
otherwise the landmark hull does.
"""

from __future__ import annotations

import io
from typing import Iterator, Optional

import numpy as np
import torch

from dva.config import to_yaml
from dva.crops import crops_to_tensor
from dva.errors import VideoError
from dva.face.config import FaceConfig
from dva.face.mask import Masker, face_mask
from dva.face.paste import FaceInFrame, paste_faces
from dva.face.warp import crop_face
from dva.runtime.weights import load_model
from dva.models.config import ModelConfig
from dva.models.reference.bisenet import FaceParserMasker
from dva.pipeline.generate import work_uri
from dva.latents import LatentStore
from dva.runtime.manifest import output_uri
from dva.storage import open_file
from dva.video import VideoWriter, iter_timed_frames, probe


class ParserPasteMask:
    """A `Masker` from a face parser: the paste classes (face without ears, neck and hair) of an RGB uint8 crop."""

    def __init__(self, parser: FaceParserMasker):
        self.parser = FaceParserMasker(paste=True, backbone=parser.backbone)

    @torch.no_grad()
    def __call__(self, crop: np.ndarray) -> np.ndarray:
        return self.parser(crops_to_tensor(crop[None]))[0].cpu().numpy()


_PASTE_MASKS: dict[str, ParserPasteMask] = {}


def paste_masker(model: ModelConfig) -> Optional[Masker]:
    """The paste mask of `model`'s face parser, or None (the landmark hull) for a model without one.

    The parser comes from the checkpoint or its weight file as in every other stage, on the CPU, and is kept per
    worker process: the stage C tasks of a job reuse it instead of loading it once per video and edit.
    """
    if model.face_parser is None:
        return None
    key = to_yaml(model)
    if key not in _PASTE_MASKS:
        _PASTE_MASKS.clear()
        _PASTE_MASKS[key] = ParserPasteMask(load_model(model, "cpu", with_unet=False).face_parser)
    return _PASTE_MASKS[key]


def _edited_crops(output: str, video_id: str, edit: str, face: int, num_chunks: int) -> Iterator[np.ndarray]:
    for chunk in range(num_chunks):
        with open_file(work_uri(output, video_id, edit, face, chunk)) as f:
            yield from np.load(io.BytesIO(f.read()), allow_pickle=False)


def finalize_video(output: str, uri: str, key: str, video_id: str, edit: str, faces: dict[int, int],
                   face: FaceConfig, masker: Optional[Masker] = None) -> tuple[str, int, float]:
    """Write the edited video, with the edited crops of the tracks `faces` ({track: its number of chunks}) pasted
    back and every other track's face kept (`dva.face.paste.paste_faces`); return (output URI, frames, fps)."""
    tracks = LatentStore(output, video_id).load_tracks()
    target = output_uri(output, key, edit)
    source = probe(uri)
    # Stage B edited each addressed track's face frames only, in order.
    edited = {k: _edited_crops(output, video_id, edit, k, n) for k, n in faces.items()}
    with VideoWriter(target, tracks[0].fps, audio_from=uri, time_base=source.time_base,
                     colour=source.colour) as writer:
        for index, (frame, time) in enumerate(iter_timed_frames(uri)):
            present = []
            for k, track in enumerate(tracks):
                if index not in track.face_frames:  # that person is absent here
                    continue
                quad = track.quads[index]
                crop = mask = None
                if k in edited:
                    crop = next(edited[k], None)
                    if crop is None:
                        raise VideoError(f"{uri}: fewer edited crops of face {k} than its "
                                         f"{len(track.face_frames)} frames")
                    mask = face_mask(crop_face(frame, quad, track.crop_size) if masker else crop,
                                     track.crop_points(index), face.mask, masker)
                present.append(FaceInFrame(points=track.points[index], quad=quad, crop=crop, mask=mask))
            writer.write(paste_faces(frame, present, face.mask), time)
        frames = writer.frames_written
        if frames != len(tracks[0]) or any(next(crops, None) is not None for crops in edited.values()):
            raise VideoError(f"{uri}: decoded {frames} frames, its face tracks have {len(tracks[0])}; "
                             "was the file replaced?")
    return target, frames, float(tracks[0].fps)
