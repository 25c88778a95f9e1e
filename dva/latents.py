"""Per-video latents under `<output>/latents/<video_id>/`: every face track of the video, its z codes and its x_T.

    meta.json            the front end's result is complete for this key and source (committed last by stage A)
    tracks.json          what was found: each track's frames and size, identity distances between tracks
    face<k>/track.npz    track k (an `AlignedTrack`; HELD outside the person's frames)
    face<k>/codes.npz    z_id and z_lnd of each frame of track k's `face_frames`
    face<k>/x_T/<chunk>.npy, face<k>/x_T.json   track k's x_T per chunk; the .json commits them all

x_T depends only on the video, the model and N (SPEC §3 step 5), so a later edit of the same face reuses it and
costs only the N generation calls per frame. A face that no edit addressed has no x_T yet: a later edit of that
person inverts only that person's frames. Stage A that is about to find the tracks again removes the whole folder
first (`invalidate`), so a run killed half-way (or one that keeps no latents) never leaves a new track beside an
older x_T that looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from dva.face.record import AlignedTrack
from dva.errors import StorageError
from dva.storage import exists, join, open_file, redact, remove_prefix, write_bytes_atomic

LAYOUT = 2  # 1: one track per video (track.npz, codes.npz and x_T/ at the top); such folders are made again


@dataclass(frozen=True)
class LatentKey:
    """What x_T depends on besides the video: the model weights and config, N, the face config, the settings of
    stage B (`dva.pipeline.stages.model_fingerprint`), and the chunking of frames."""

    model_fingerprint: str
    steps: int
    chunk_frames: int

    def fingerprint(self, source_stamp: str) -> str:
        """One short id of the key and a version of a video: what the video's latents were made from (a finished
        (video, edit) adds the edit's files and stage C's settings: `dva.pipeline.fingerprint`)."""
        text = f"{self.model_fingerprint}/{self.steps}/{self.chunk_frames}/{source_stamp}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def record(self, source_stamp: str) -> dict:
        return {"layout": LAYOUT, "model_fingerprint": self.model_fingerprint, "steps": self.steps,
                "chunk_frames": self.chunk_frames, "source_stamp": source_stamp}


def _codes_npz(z_id_frames: np.ndarray, z_lnd: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, z_id_frames=z_id_frames.astype(np.float32), z_lnd=z_lnd.astype(np.float32))
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _load_npy(uri: str) -> np.ndarray:
    with open_file(uri) as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def _read_json(uri: str) -> Optional[dict]:
    if not exists(uri):
        return None
    with open_file(uri) as f:
        return json.loads(f.read())


def _made_for(meta: Optional[dict], key: LatentKey, source_stamp: str) -> bool:
    return meta is not None and all(meta.get(k) == v for k, v in key.record(source_stamp).items())


class LatentStore:
    def __init__(self, output_prefix: str, video_id: str):
        self.root = join(output_prefix, "latents", video_id)

    def _uri(self, *parts: str) -> str:
        return join(self.root, *parts)

    @property
    def tracks_summary_uri(self) -> str:
        """`tracks.json`: every face track stage A found in the video and the identity distances between them."""
        return self._uri("tracks.json")

    def _face(self, face: int, *parts: str) -> str:
        return self._uri(f"face{face}", *parts)

    def _matches(self, uri: str, key: LatentKey, source_stamp: str) -> bool:
        return _made_for(_read_json(uri), key, source_stamp)

    def has_tracks(self, key: LatentKey, source_stamp: str) -> bool:
        """Whether the front end's result (every track and its codes) is committed for `key` and for the source as
        it is now (`dva.storage.file_stamp`): a video replaced at the same location is tracked again."""
        return self._matches(self._uri("meta.json"), key, source_stamp)

    def has_x_T(self, face: int, key: LatentKey, source_stamp: str) -> bool:
        """Whether track `face`'s x_T is committed for `key` and the source as it is now. A record can only belong
        to the stored tracks: `invalidate` removes every face's files before tracks are found again."""
        return self._matches(self._face(face, "x_T.json"), key, source_stamp)

    def is_complete(self, key: LatentKey, source_stamp: str) -> bool:
        """Whether the tracks and every track's x_T are stored for `key` and the source as it is now."""
        meta = _read_json(self._uri("meta.json"))
        return (_made_for(meta, key, source_stamp)
                and all(self.has_x_T(face, key, source_stamp) for face in range(int(meta["tracks"]))))

    def invalidate(self) -> None:
        """Stop trusting anything stored for the video before its tracks are found again."""
        remove_prefix(self._uri("meta.json"))
        remove_prefix(self.root)

    def save_tracks(self, tracks: list[AlignedTrack], codes: list[tuple[np.ndarray, np.ndarray]],
                    summary: dict) -> None:
        """The front end's result: each track with the z_id and z_lnd of its face frames, and the summary."""
        for face, (track, (z_id_frames, z_lnd)) in enumerate(zip(tracks, codes)):
            track.save(self._face(face, "track.npz"))
            write_bytes_atomic(self._face(face, "codes.npz"), _codes_npz(z_id_frames, z_lnd))
        write_bytes_atomic(self.tracks_summary_uri, json.dumps(summary, indent=1).encode())

    def commit_tracks(self, key: LatentKey, num_tracks: int, source: str, source_stamp: str) -> None:
        meta = {**key.record(source_stamp), "tracks": num_tracks, "source": source}
        write_bytes_atomic(self._uri("meta.json"), json.dumps(meta, indent=1).encode())

    def num_tracks(self) -> int:
        meta = _read_json(self._uri("meta.json"))
        if meta is None or meta.get("layout") != LAYOUT:
            raise StorageError(f"{redact(self.root)}: no face tracks are stored for this video")
        return int(meta["tracks"])

    def load_track(self, face: int) -> AlignedTrack:
        return AlignedTrack.load(self._face(face, "track.npz"))

    def load_tracks(self) -> list[AlignedTrack]:
        return [self.load_track(face) for face in range(self.num_tracks())]

    def load_largest_track(self) -> AlignedTrack:
        """The track with the largest face (what an evaluation of "the" face of a video looks at)."""
        return max(self.load_tracks(), key=lambda track: track.face_size)

    def load_codes(self, face: int) -> tuple[np.ndarray, np.ndarray]:
        """z_id and z_lnd of each of track `face`'s `face_frames`."""
        with open_file(self._face(face, "codes.npz")) as f:
            data = np.load(io.BytesIO(f.read()), allow_pickle=False)
            return data["z_id_frames"], data["z_lnd"]

    def save_x_T(self, face: int, chunk: int, x_T: np.ndarray) -> None:
        write_bytes_atomic(self._face(face, "x_T", f"{chunk:06d}.npy"), _npy_bytes(x_T.astype(np.float32)))

    def load_x_T(self, face: int, chunk: int) -> np.ndarray:
        try:
            return _load_npy(self._face(face, "x_T", f"{chunk:06d}.npy"))
        except (StorageError, ValueError) as err:
            raise StorageError(f"stored x_T of chunk {chunk} of face {face} is unreadable: {err}. Delete "
                               f"{redact(self.root)} or run with reuse_latents=false to invert this video again"
                               ) from None

    def commit_x_T(self, face: int, key: LatentKey, num_chunks: int, source_stamp: str) -> None:
        meta = {**key.record(source_stamp), "num_chunks": num_chunks}
        write_bytes_atomic(self._face(face, "x_T.json"), json.dumps(meta, indent=1).encode())


def tracks_bytes(source: str, num_frames: int, face_frames: Sequence[int], code_dims: tuple[int, int]) -> int:
    """Bytes of the tracks and codes stage A stores for a video of `num_frames` frames whose tracks have
    `face_frames` frames each: every track's `track.npz` (all frames of the video) and `codes.npz` (z_id and z_lnd,
    of `code_dims` values, per face frame). The JSON records (a few hundred bytes each) are not counted."""
    def codes(n: int) -> int:
        return len(_codes_npz(np.zeros((n, code_dims[0])), np.zeros((n, code_dims[1]))))

    per_frame = codes(1) - codes(0)
    return sum(AlignedTrack.file_bytes(source, num_frames) + codes(0) + n * per_frame for n in face_frames)


def x_T_bytes(face_frames: int, crop_size: int, chunk_frames: int) -> int:
    """Bytes of one face's stored x_T: float32 [n, 3, S, S] (the crops' shape) per chunk of `chunk_frames`."""
    def npy(n: int) -> int:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                   "shape": (n, 3, crop_size, crop_size)})
        return buf.tell() + 4 * n * 3 * crop_size * crop_size

    full, rest = divmod(face_frames, chunk_frames)
    return full * npy(chunk_frames) + (npy(rest) if rest else 0)


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
