"""Temporal consistency of an edit job's outputs (SPEC §4): TL-ID, TG-ID and face-region flicker per (video, edit).

The source and the edited video are decoded together, one chunk of frames at a time. Both are cropped by the
*source's* stored face track (`<output>/latents/<video_id>/track.npz`), so the identity network sees the same
aligned region in both, and the edit is judged where it was pasted. Flicker is measured on those crops inside the
landmark hull (brows lifted onto the forehead, as the paste mask), so background motion and the smoothed crop's own
movement count for neither video.

Frames the track marks HELD (before the face first appears or after it leaves) hold no face: they are left out of
TL-ID / TG-ID and get no weight in flicker. The per-frame cosine between source and edited identity is kept for
plots (it says how far the edit moved the identity, which TL-ID / TG-ID deliberately do not).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import torch

from dva.errors import DvaError, StorageError
from dva.face.landmarker import FaceLandmarker
from dva.face.mask import landmark_hull_mask
from dva.face.record import AlignedTrack
from dva.face.track import FrameStatus
from dva.face.warp import crop_face, to_crop_coords
from dva.metrics import flicker, identity_consistency
from dva.models.config import EncoderConfig
from dva.models.encoders import build_encoder
from dva.runtime.weights import resolve_encoder
from dva.latents import LatentStore
from dva.runtime.manifest import read_manifest
from dva.crops import crops_to_tensor
from dva.storage import redact, shown
from dva.video import iter_frames

Embed = Callable[[torch.Tensor], torch.Tensor]

SCHEMA = pa.schema([
    ("video", pa.string()),
    ("video_id", pa.string()),
    ("edit", pa.string()),
    ("edit_id", pa.string()),
    ("output", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("frames", pa.int64()),
    ("face_frames", pa.int64()),
    ("tl_id", pa.float64()),
    ("tg_id", pa.float64()),
    ("flicker", pa.float64()),
    ("id_cosine", pa.float64()),
    ("seconds", pa.float64()),
])
FRAMES_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("edit_id", pa.string()),
    ("frame", pa.int64()),
    ("face", pa.bool_()),
    ("cosine", pa.float64()),
])
METRICS = ("tl_id", "tg_id", "flicker", "id_cosine")


def build_identity_embedder(cfg: EncoderConfig, device: torch.device) -> Embed:
    """The configured identity network as `embed(crops [n, 3, S, S] in [−1, 1]) -> [n, D]` on the CPU."""
    encoder = build_encoder(resolve_encoder(cfg, "identity"), "identity", "identity")
    if isinstance(encoder, torch.nn.Module):
        encoder = encoder.to(device)
    return lambda images: encoder(images.to(device)).float().cpu()


@dataclass
class PairScores:
    tl_id: Optional[float]
    tg_id: Optional[float]
    flicker: Optional[float]
    cosines: np.ndarray  # [N] source-vs-edit identity cosine per frame, NaN where the track holds no face
    face: np.ndarray  # [N] bool, frames with a face
    source_embeddings: torch.Tensor  # [N, D], reusable for the video's other edits
    errors: list[str]


class _FacePass:
    """One lockstep decode of a source and its edit, yielding (source crops, edited crops, hull masks) per chunk as
    [n, 3|1, S, S] float tensors for `flicker`, and embedding the crops as they pass, so one decode of each video
    serves every metric."""

    def __init__(self, source: str, edited: str, track: AlignedTrack, size: int, brow_lift: float, chunk: int,
                 embed: Embed, embed_source: bool):
        self.source, self.edited, self.track = source, edited, track
        self.size, self.brow_lift, self.chunk, self.embed = size, brow_lift, chunk, embed
        self.embeddings: dict[str, list[torch.Tensor]] = {"source": [], "edited": []} if embed_source else {
            "edited": []}
        self.finished = False  # every frame went through

    def _images(self, batch: list, which: int) -> torch.Tensor:
        """Crops of the source (0) or the edit (1) in [0, 1], embedded on the way when asked for."""
        images = crops_to_tensor(np.stack([crop_face(frames[which], self.track.quads[i], self.size)
                                           for i, frames in batch]))
        name = ("source", "edited")[which]
        if name in self.embeddings:
            self.embeddings[name].append(self.embed(images))
        return (images + 1) / 2

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        track = self.track
        frames = enumerate(itertools.zip_longest(iter_frames(self.source), iter_frames(self.edited)))
        while batch := list(itertools.islice(frames, self.chunk)):
            index, (source, edited) = batch[-1]
            if source is None or edited is None or index >= len(track):
                raise DvaError(f"{redact(self.edited)}, its source {redact(self.source)} and the source's face track "
                               f"({len(track)} frames) differ in frame count")
            masks = [landmark_hull_mask(to_crop_coords(track.points[i], track.quads[i], self.size), self.size,
                                        self.brow_lift) & (track.status[i] != FrameStatus.HELD) for i, _ in batch]
            yield self._images(batch, 0), self._images(batch, 1), torch.from_numpy(np.stack(masks))[:, None].float()
        self.finished = True


def _item(stream: Iterator[tuple], k: int) -> Iterator:
    return (part[k] for part in stream)


def evaluate_pair(source: str, edited: str, track: AlignedTrack, embed: Embed, *, crop_size: int,
                  brow_lift: float, chunk: int = 16, source_embeddings: Optional[torch.Tensor] = None) -> PairScores:
    """TL-ID, TG-ID and flicker of one edited video against its source; a metric that is undefined for this clip
    (a still source, too few face frames, a source the network does not see as one person) is None, and why is in
    `errors`. Decoding errors and frame-count mismatches raise."""
    face_pass = _FacePass(source, edited, track, crop_size, brow_lift, chunk, embed, source_embeddings is None)
    streams = itertools.tee(face_pass.chunks(), 3)
    errors = []
    try:
        flick: Optional[float] = flicker(*(_item(stream, k) for k, stream in enumerate(streams)))
    except DvaError as err:
        if not face_pass.finished:  # a decoding error, not an undefined ratio
            raise
        flick = None
        errors.append(f"flicker: {err}")
    src = source_embeddings if source_embeddings is not None else torch.cat(face_pass.embeddings["source"])
    edit = torch.cat(face_pass.embeddings["edited"])
    if len(src) != len(track) or len(edit) != len(track):  # the videos ended before the track did
        raise DvaError(f"{redact(edited)} has {len(edit)} frames but its source's face track {len(track)}")
    face = track.status != FrameStatus.HELD
    cosines = torch.nn.functional.cosine_similarity(src.double(), edit.double(), dim=1).numpy()
    cosines[~face] = np.nan
    tl_id = tg_id = None
    try:
        scores = identity_consistency(src[face], edit[face])
        tl_id, tg_id = scores.tl_id, scores.tg_id
    except DvaError as err:
        errors.append(f"TL-ID/TG-ID: {err}")
    return PairScores(tl_id, tg_id, flick, cosines, face, src, errors)


def load_track(output_prefix: str, video_id: str, source: str,
               landmarker: Optional[Callable[[], FaceLandmarker]], face_cfg) -> AlignedTrack:
    """The face track the edit job stored, or (when it kept no latents) a fresh one from the front end."""
    try:
        return LatentStore(output_prefix, video_id).load_largest_track()
    except StorageError:
        if landmarker is None:
            raise
    from dva.face.crop_video import align_video

    return align_video(source, landmarker(), face_cfg)


def evaluate_edit_outputs(output_prefix: str, embed: Embed, *, crop_size: int, face_cfg, chunk: int = 16,
                          landmarker: Optional[Callable[[], FaceLandmarker]] = None, fail_fast: bool = False,
                          log: Callable[[str], None] = lambda _: None) -> tuple[list[dict], list[dict]]:
    """Evaluate every (video, edit) the job finished ("ok" manifest rows with an edited video): per-pair rows
    (`SCHEMA`) and per-frame rows (`FRAMES_SCHEMA`). A pair that cannot be evaluated gets a failed row."""
    manifest = read_manifest(output_prefix)
    if not len(manifest):
        raise DvaError(f"no manifest rows under {redact(output_prefix)}/manifest/: `input` must be the output prefix "
                       "of an edit job that has finished at least one video")
    rows = [r for r in manifest.to_pylist() if r["status"] == "ok" and r["edit"]]
    rows.sort(key=lambda r: (r["video"], r["edit"]))
    pairs, frames = [], []
    for video_id, group in itertools.groupby(rows, key=lambda r: r["video_id"]):
        source_embeddings = None
        track = None
        for row in group:
            began = time.perf_counter()
            result = {k: row[k] for k in ("video", "video_id", "edit", "edit_id", "output")}
            try:
                track = track or load_track(output_prefix, video_id, row["video"], landmarker, face_cfg)
                scores = evaluate_pair(row["video"], row["output"], track, embed, crop_size=crop_size,
                                       brow_lift=face_cfg.mask.brow_lift, chunk=chunk,
                                       source_embeddings=source_embeddings)
            except Exception as err:  # recorded per pair; the evaluation goes on
                if fail_fast:
                    raise
                message = str(err) if isinstance(err, DvaError) else f"{type(err).__name__}: {err}"
                pairs.append({**result, "status": "failed", "error": redact(message),
                              "seconds": time.perf_counter() - began})
                log(shown(f"FAILED {row['video']} [{row['edit']}]: {message}"))
                continue
            source_embeddings = scores.source_embeddings
            face_cosines = scores.cosines[scores.face]
            pairs.append({**result, "status": "ok", "error": "; ".join(scores.errors) or None,
                          "frames": len(scores.face), "face_frames": int(scores.face.sum()),
                          "tl_id": scores.tl_id, "tg_id": scores.tg_id, "flicker": scores.flicker,
                          "id_cosine": float(face_cosines.mean()) if len(face_cosines) else None,
                          "seconds": time.perf_counter() - began})
            frames += [{"video_id": video_id, "edit_id": row["edit_id"], "frame": i, "face": bool(f),
                        "cosine": None if np.isnan(c) else float(c)}
                       for i, (f, c) in enumerate(zip(scores.face, scores.cosines))]
            log(f"{shown(row['video'])} [{row['edit']}]: " + ", ".join(
                f"{name} {'—' if value is None else f'{value:.4g}'}"
                for name, value in (("TL-ID", scores.tl_id), ("TG-ID", scores.tg_id), ("flicker", scores.flicker))))
    return pairs, frames


def summarise(pairs: list[dict]) -> dict:
    """Means over evaluated pairs: all together and per edit spec (the paper averages TL-ID / TG-ID over edits)."""
    def means(rows: list[dict]) -> dict:
        out: dict = {"pairs": len(rows)}
        for k in METRICS:
            values = [r[k] for r in rows if r.get(k) is not None]
            out[k] = float(np.mean(values)) if values else None
        return out

    ok = [r for r in pairs if r["status"] == "ok"]
    by_edit = {edit: means([r for r in ok if r["edit"] == edit]) for edit in sorted({r["edit"] for r in ok})}
    return {"mean": means(ok), "by_edit": by_edit,
            "counts": {"ok": len(ok), "failed": sum(r["status"] == "failed" for r in pairs)}}
