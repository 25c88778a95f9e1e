"""Stage C, per (video, edit) on CPU: paste the edited crops back into the original frames, encode, commit.

The source is decoded once more and the edited crop chunks are read in frame order, one chunk at a time. The
output video (H.264 at the source fps, the source audio carried over) appears at its final key only when complete.
"""

from __future__ import annotations

import io
from typing import Iterator, Optional

import numpy as np

from dva.errors import VideoError
from dva.face.config import FaceConfig
from dva.face.mask import Masker, face_mask
from dva.face.paste import paste_face
from dva.face.warp import crop_face
from dva.pipeline.generate import work_uri
from dva.pipeline.latents import LatentStore
from dva.pipeline.manifest import output_uri
from dva.storage import open_file
from dva.video import VideoWriter, iter_frames


def _edited_crops(output: str, video_id: str, edit: str, num_chunks: int) -> Iterator[np.ndarray]:
    for chunk in range(num_chunks):
        with open_file(work_uri(output, video_id, edit, chunk)) as f:
            yield from np.load(io.BytesIO(f.read()), allow_pickle=False)


def finalize_video(output: str, uri: str, key: str, video_id: str, edit: str, num_chunks: int,
                   face: FaceConfig, masker: Optional[Masker] = None) -> tuple[str, int, float]:
    """Write the edited video; return (output URI, frames written, fps)."""
    track = LatentStore(output, video_id).load_track()
    target = output_uri(output, key, edit)
    size = track.crop_size
    face_frames = track.face_frames  # stage B edited these frames only, in order
    edited_crops = _edited_crops(output, video_id, edit, num_chunks)
    with VideoWriter(target, track.fps, audio_from=uri) as writer:
        for index, frame in enumerate(iter_frames(uri)):
            if index not in face_frames:  # before the face appears or after it left: keep the frame
                writer.write(frame)
                continue
            edited = next(edited_crops, None)
            if edited is None:
                raise VideoError(f"{uri}: fewer edited crops than the {len(face_frames)} frames with a face")
            quad = track.quads[index]
            mask = face_mask(crop_face(frame, quad, size) if masker else edited, track.crop_points(index),
                             face.mask, masker)
            writer.write(paste_face(frame, edited, quad, mask, face.mask))
        frames = writer.frames_written
        if frames != len(track) or next(edited_crops, None) is not None:
            raise VideoError(f"{uri}: decoded {frames} frames, its face track has {len(track)}; was the file replaced?")
    return target, frames, float(track.fps)
