"""Per-video latents under `<output>/latents/<video_id>/`: the face track, z codes and x_T per chunk.

x_T depends only on the video, the model and N (SPEC §3 step 5), so a later edit of the same video reuses it and
costs only the N generation calls per frame. The files form one unit, committed by `meta.json`: a job that is about
to write a new track removes it first (`invalidate`) and writes it again last (`commit`), so a folder without it is
ignored, and a run killed half-way (or one that keeps no latents) never leaves a new track beside an older x_T that
looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Optional

import numpy as np

from dva.face.record import AlignedTrack
from dva.errors import StorageError
from dva.storage import exists, join, open_file, redact, remove_prefix, write_bytes_atomic


@dataclass(frozen=True)
class LatentKey:
    """What x_T depends on besides the video: the model weights and config, N, the face config, the settings of
    stage B (`dva.pipeline.stages.model_fingerprint`), and the chunking of frames."""

    model_fingerprint: str
    steps: int
    chunk_frames: int

    def fingerprint(self, source_stamp: str) -> str:
        """One short id of the key and a version of a video: what a finished (video, edit) was made from."""
        text = f"{self.model_fingerprint}/{self.steps}/{self.chunk_frames}/{source_stamp}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _load_npy(uri: str) -> np.ndarray:
    with open_file(uri) as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


class LatentStore:
    def __init__(self, output_prefix: str, video_id: str):
        self.root = join(output_prefix, "latents", video_id)

    def _uri(self, *parts: str) -> str:
        return join(self.root, *parts)

    @property
    def tracks_summary_uri(self) -> str:
        """`tracks.json`: every face track stage A found in the video and the identity distances between them."""
        return self._uri("tracks.json")

    def is_complete(self, key: LatentKey, source_stamp: str) -> bool:
        """Whether a committed set exists for `key` and for the source as it is now (`dva.storage.file_stamp`):
        a video replaced at the same location is encoded again."""
        meta_uri = self._uri("meta.json")
        if not exists(meta_uri):
            return False
        with open_file(meta_uri) as f:
            meta = json.loads(f.read())
        return (meta.get("model_fingerprint"), meta.get("steps"), meta.get("chunk_frames"),
                meta.get("source_stamp")) == (key.model_fingerprint, key.steps, key.chunk_frames, source_stamp)

    def invalidate(self) -> None:
        """Stop trusting the stored set before any of its files is replaced."""
        remove_prefix(self._uri("meta.json"))

    def save_track(self, track: AlignedTrack) -> None:
        track.save(self._uri("track.npz"))

    def load_track(self) -> AlignedTrack:
        return AlignedTrack.load(self._uri("track.npz"))

    def save_codes(self, z_id_frames: np.ndarray, z_lnd: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, z_id_frames=z_id_frames.astype(np.float32), z_lnd=z_lnd.astype(np.float32))
        write_bytes_atomic(self._uri("codes.npz"), buf.getvalue())

    def load_codes(self) -> tuple[np.ndarray, np.ndarray]:
        with open_file(self._uri("codes.npz")) as f:
            data = np.load(io.BytesIO(f.read()), allow_pickle=False)
            return data["z_id_frames"], data["z_lnd"]

    def save_x_T(self, chunk: int, x_T: np.ndarray) -> None:
        write_bytes_atomic(self._uri("x_T", f"{chunk:06d}.npy"), _npy_bytes(x_T.astype(np.float32)))

    def load_x_T(self, chunk: int) -> np.ndarray:
        try:
            return _load_npy(self._uri("x_T", f"{chunk:06d}.npy"))
        except (StorageError, ValueError) as err:
            raise StorageError(f"stored x_T of chunk {chunk} is unreadable: {err}. Delete {redact(self.root)} or "
                               "run with reuse_latents=false to invert this video again") from None

    def commit(self, key: LatentKey, num_frames: int, num_chunks: int, source: str, source_stamp: str) -> None:
        meta = {"model_fingerprint": key.model_fingerprint, "steps": key.steps, "chunk_frames": key.chunk_frames,
                "num_frames": num_frames, "num_chunks": num_chunks, "source": source, "source_stamp": source_stamp}
        write_bytes_atomic(self._uri("meta.json"), json.dumps(meta, indent=1).encode())


def read_tracks_summary(output_prefix: str, video_id: str) -> Optional[dict]:
    """The video's `tracks.json` ({"video", "num_frames", "tracks": [{"index", "first", "last", "detected",
    "size"}], "identity_distance": T x T}), or None where the job wrote none (outputs made before it did)."""
    uri = LatentStore(output_prefix, video_id).tracks_summary_uri
    if not exists(uri):
        return None
    with open_file(uri) as f:
        try:
            return json.loads(f.read())
        except ValueError as err:
            raise StorageError(f"{redact(uri)} is not a face-track summary ({err}); delete it and rerun the job "
                               "with reuse_latents=false to find the video's faces again") from None
