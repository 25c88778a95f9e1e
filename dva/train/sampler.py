"""Per-worker training batches of k videos x m frames (SPEC §2) from a stream of shard rows, randomly mirrored.

The reference draws k videos uniformly from the whole dataset and m random frames of each. A worker here only sees
a stream (its share of the shards, file order reshuffled per epoch), so it keeps a buffer of whole videos (a
shuffle window of `buffer_videos`) and draws k distinct videos from it, then m distinct frames of each. A video
leaves the buffer after `uses_per_video` draws; at the end of an epoch the videos still buffered are drawn from
while the next epoch fills the buffer again. Where Ray Data hands a worker only part of a video (its rows split
between workers to balance them), that part counts as the video.

Mirroring flips crop and mask and takes the z codes that preprocessing computed for the mirrored crop.

A checkpoint stores each worker's stream position: the epoch, and the row where the oldest video it still
buffers began. A resumed worker skips to that row, so no video is lost and the few read again are drawn more than
their share. Ray Data's split is not deterministic across runs, so a resumed epoch sees approximately, not exactly,
the rows the lost one had left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from dva.errors import DvaError
from dva.crops import crops_to_tensor
from dva.train.config import TrainDataConfig
from dva.train.shards import CODE_COLUMNS, decode_png

# One frame as stored: PNG crop, PNG mask, then the CODE_COLUMNS arrays.
Frame = tuple


@dataclass
class DataPosition:
    epoch: int = 0
    rows: int = 0  # rows of this epoch's stream already consumed


@dataclass
class _Video:
    frames: list
    expected: int
    epoch: int  # the epoch, and the row of its stream, where the video's first row came
    offset: int
    uses: int = 0
    complete: bool = False


class VideoBatchSampler:
    """`next_batch(rng)` → (batch for `train_step`, video id of each row). `epochs(n)` gives epoch n's row batches
    (dicts of column arrays, e.g. a Ray Data shard's `iter_batches(batch_format="numpy")`)."""

    def __init__(self, epochs: Callable[[int], Iterable[dict]], cfg: TrainDataConfig,
                 position: Optional[DataPosition] = None):
        self.epochs = epochs
        self.cfg = cfg
        start = position or DataPosition()
        self.position = DataPosition(start.epoch, 0)
        self._skip = start.rows  # resuming mid-epoch: drop the rows a checkpointed run had consumed
        self._stream: Optional[Iterator[dict]] = None
        self._epoch_videos: set[str] = set()
        self._videos: dict[str, _Video] = {}

    def checkpoint_position(self) -> DataPosition:
        """Where a resumed run should start reading: at the first row of the oldest video of this epoch still
        buffered (its frames may be drawn again), so no video is lost and few are seen twice."""
        offsets = [v.offset for v in self._videos.values() if v.epoch == self.position.epoch]
        return DataPosition(self.position.epoch, min(offsets, default=self.position.rows))

    def _ready(self) -> list[str]:
        return [vid for vid, v in self._videos.items() if v.complete]

    def _pull(self) -> bool:
        """Buffer one more batch of rows; False when the epoch's stream is exhausted."""
        if self._stream is None:
            self._stream = iter(self.epochs(self.position.epoch))
            self._epoch_videos = set()
        batch = next(self._stream, None)
        if batch is None:
            return False
        n = len(batch["video_id"])
        self.position.rows += n
        first = min(self._skip, n)
        self._skip -= first
        self._epoch_videos.update(str(v) for v in batch["video_id"])
        for i in range(first, n):
            vid = str(batch["video_id"][i])
            video = self._videos.setdefault(
                vid, _Video([], int(batch["num_frames"][i]), self.position.epoch, self.position.rows - n + i))
            video.frames.append((batch["image"][i], batch["mask"][i], *(batch[c][i] for c in CODE_COLUMNS)))
            video.complete = len(video.frames) >= video.expected
        return True

    def _fill(self) -> list[str]:
        """Read until `buffer_videos` videos are complete, or until an epoch ends with at least k; return the
        videos to draw from (fewer than k only when this worker's whole share holds fewer)."""
        k = self.cfg.videos_per_step
        while len(self._ready()) < self.cfg.buffer_videos:
            if self._pull():
                continue
            rows, videos = self.position.rows, len(self._epoch_videos)
            self._end_epoch()
            for video in self._videos.values():  # partial videos are all this worker gets of them this epoch
                video.complete = True
            if len(self._videos) >= k or (self._videos and videos < k):
                break
            if rows == 0:
                raise DvaError(f"this worker's share of the training data is empty (epoch {self.position.epoch - 1})"
                               "; use fewer workers than shard rows, or check `data.path`")
        return self._ready()

    def _end_epoch(self) -> None:
        self._stream = None
        self._skip = 0
        self.position.epoch += 1
        self.position.rows = 0

    def next_batch(self, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], list[str]]:
        ready = self._fill()
        k, m = self.cfg.videos_per_step, self.cfg.frames_per_video
        chosen = [ready[i] for i in rng.choice(len(ready), size=k, replace=len(ready) < k)]
        frames: list[Frame] = []
        videos: list[str] = []
        for vid in chosen:
            video = self._videos[vid]
            picks = rng.choice(len(video.frames), size=m, replace=len(video.frames) < m)
            frames.extend(video.frames[i] for i in picks)
            videos.extend([vid] * m)
            video.uses += 1
        for vid in set(chosen):
            if self._videos[vid].uses >= self.cfg.uses_per_video:
                del self._videos[vid]
        flips = rng.random(len(frames)) < 0.5 if self.cfg.flip else np.zeros(len(frames), bool)
        return _to_batch(frames, flips), videos


def _to_batch(frames: list[Frame], flips: np.ndarray) -> dict[str, torch.Tensor]:
    crops, masks, z_id, z_lnd = [], [], [], []
    for (image, mask, zi, zl, zi_flip, zl_flip), flip in zip(frames, flips):
        crop, face = decode_png(image, colour=True), decode_png(mask, colour=False) > 127
        if flip:
            crop, face, zi, zl = crop[:, ::-1], face[:, ::-1], zi_flip, zl_flip
        crops.append(crop)
        masks.append(face)
        z_id.append(zi)
        z_lnd.append(zl)
    return {"images": crops_to_tensor(np.stack(crops)),
            "mask": torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)),
            "z_id": torch.from_numpy(np.stack(z_id).astype(np.float32)),
            "z_lnd": torch.from_numpy(np.stack(z_lnd).astype(np.float32))}
