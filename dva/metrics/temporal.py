"""Temporal consistency of an edited video relative to its source (SPEC §4).

TL-ID / TG-ID (from STIT) compare how similar a face's identity stays across frames after editing with how similar
it was in the source, so a clip whose source identity already wobbles (pose, light) is not blamed on the edit.
`flicker` does the same for raw pixels. All are ratios where 1.0 means "as stable as the source".

Frames may come as one array [N, C, H, W] or as an iterable of chunks [n, C, H, W] (a decoder's output), so a long
video never has to sit in memory; identity embeddings [N, D] are small and are taken whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dva.errors import DvaError

Frames = torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray]


@dataclass(frozen=True)
class IdentityConsistency:
    """TL-ID: mean ratio over adjacent frames (local jitter). TG-ID: over all frame pairs (slow identity drift)."""

    tl_id: float
    tg_id: float


def _aligned_chunks(videos: list[Frames | None], chunk: int) -> Iterator[list[torch.Tensor | None]]:
    """Frame-aligned chunks of several videos. Iterables of chunks set the chunk sizes (and must agree with each
    other); in-memory arrays are sliced to match, or into `chunk` frames when nothing streams; None stays None."""
    videos = [torch.as_tensor(v) if isinstance(v, (torch.Tensor, np.ndarray)) else v for v in videos]
    streams = [iter(v) for v in videos if v is not None and not isinstance(v, torch.Tensor)]
    lengths = {len(v) for v in videos if isinstance(v, torch.Tensor)}
    if len(lengths) > 1:
        raise DvaError(f"videos must have one frame count; got {sorted(lengths)}")
    total = lengths.pop() if lengths else None
    start = 0
    while True:
        parts = [next(stream, None) for stream in streams]
        if all(part is None for part in parts) and (streams or start >= total):
            break
        if any(part is None for part in parts):
            raise DvaError("videos given as chunk iterables must have the same number of chunks")
        parts = [torch.as_tensor(part) for part in parts]
        n = len(parts[0]) if parts else min(chunk, total - start)
        if any(len(part) != n for part in parts) or (total is not None and start + n > total):
            raise DvaError(f"videos must have one frame count and matching chunks; they differ at frame {start}")
        given = iter(parts)
        yield [
            v[start : start + n] if isinstance(v, torch.Tensor) else None if v is None else next(given) for v in videos
        ]
        start += n
    if total is not None and start != total:
        raise DvaError(f"videos must have one frame count; the streamed ones end at frame {start}, not {total}")


def _source_ratio(edited: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """S_edit / S_src, refusing pairs whose source similarity is not positive: there the ratio's sign and size say
    nothing about the edit (the identity network does not see one person in the source)."""
    if source.numel() and source.min() <= 0:
        raise DvaError(
            "TL-ID/TG-ID need source frames whose identity embeddings have positive cosine similarity; some pair has "
            f"{source.min().item():.3g}: check that the source clip holds one face and the identity network fits it"
        )
    return edited / source


def identity_consistency(
    source_embeddings: torch.Tensor | np.ndarray,
    edited_embeddings: torch.Tensor | np.ndarray,
    *,
    block: int = 1024,
) -> IdentityConsistency:
    """TL-ID and TG-ID of per-frame identity embeddings [N, D] of a source clip and its edit.

    R = S_edit / S_src element-wise over pairwise cosine similarities. R is symmetric, so its mean over i ≠ j is its
    mean over i < j; that triangle is walked in row blocks of `block` frames so memory stays O(block · N).
    """
    src = torch.as_tensor(source_embeddings, dtype=torch.float64)
    edit = torch.as_tensor(edited_embeddings, dtype=torch.float64)
    if src.ndim != 2 or src.shape != edit.shape or len(src) < 2:
        raise DvaError(
            "identity consistency needs source and edited embeddings of one shape [N, D] with N ≥ 2 frames; got "
            f"{tuple(src.shape)} and {tuple(edit.shape)}"
        )
    src = torch.nn.functional.normalize(src, dim=1)
    edit = torch.nn.functional.normalize(edit, dim=1)
    adjacent = _source_ratio((edit[:-1] * edit[1:]).sum(1), (src[:-1] * src[1:]).sum(1))
    n = len(src)
    total = 0.0
    for start in range(0, n, block):
        later = torch.ones(min(block, n - start), n - start, dtype=torch.bool).triu(1)
        ratio = _source_ratio(
            (edit[start : start + block] @ edit[start:].T)[later], (src[start : start + block] @ src[start:].T)[later]
        )
        total += ratio.sum().item()
    return IdentityConsistency(tl_id=adjacent.mean().item(), tg_id=total / (n * (n - 1) / 2))


def embed_frames(
    frames: Frames, embed: Callable[[torch.Tensor], torch.Tensor], *, chunk: int = 64
) -> torch.Tensor:
    """Embeddings [N, D] of a video, calling `embed` on at most `chunk` frames at a time (or on each given chunk).

    `embed` receives frames as they are given and owns their normalisation, so any identity network fits.
    """
    with torch.no_grad():
        return torch.cat([embed(part).detach().cpu() for (part,) in _aligned_chunks([frames], chunk)])


def video_identity_consistency(
    source_frames: Frames,
    edited_frames: Frames,
    embed: Callable[[torch.Tensor], torch.Tensor],
    *,
    chunk: int = 64,
) -> IdentityConsistency:
    """TL-ID and TG-ID of two videos, embedding each frame with `embed(frames [n, C, H, W]) -> [n, D]`."""
    return identity_consistency(
        embed_frames(source_frames, embed, chunk=chunk), embed_frames(edited_frames, embed, chunk=chunk)
    )


def flicker(
    source_frames: Frames, edited_frames: Frames, mask: Frames | None = None, *, chunk: int = 64
) -> float:
    """Mean absolute frame-to-frame change of the edited video over that of the source, inside `mask`.

    1.0 means the edit moves exactly as much as the source; above 1 it adds temporal noise (flicker, texture
    sticking and jumping). A soft mask in [0, 1] weights pixels; a transition t → t+1 counts a pixel by the larger of
    its two masks, so a face that moves is covered in both frames. Frames are read chunk by chunk, carrying the last
    frame across chunk boundaries.
    """
    static_mask = None
    if isinstance(mask, (torch.Tensor, np.ndarray)):
        mask = torch.as_tensor(mask)
        if mask.ndim not in (2, 4):
            raise DvaError(f"flicker `mask` must be [H, W] or [N, 1, H, W]; got {tuple(mask.shape)}")
        if mask.ndim == 2:
            static_mask, mask = mask, None
    change = {"source": 0.0, "edited": 0.0}
    previous: dict[str, torch.Tensor] = {}
    previous_mask: torch.Tensor | None = None
    for src, edit, weight in _aligned_chunks([source_frames, edited_frames, mask], chunk):
        n, size = len(src), src.shape[-2:]
        weight = static_mask if weight is None else weight
        weight = src.new_ones(n, 1, *size) if weight is None else weight.to(src.device)
        weight = weight.float()
        if src.shape != edit.shape or weight.shape[-2:] != size or (weight.ndim == 4 and weight.shape[:2] != (n, 1)):
            raise DvaError(
                "flicker needs source, edited and mask chunks of matching frames and size; got "
                f"{tuple(src.shape)}, {tuple(edit.shape)} and mask {tuple(weight.shape)}"
            )
        weight = weight.expand(n, 1, *size)
        if previous_mask is not None:
            weight = torch.cat([previous_mask, weight])
        previous_mask = weight[-1:]
        weight = torch.maximum(weight[1:], weight[:-1])
        for name, part in (("source", src), ("edited", edit)):
            part = part.float()
            if name in previous:
                part = torch.cat([previous[name], part])
            previous[name] = part[-1:]
            change[name] += ((part[1:] - part[:-1]).abs() * weight).double().sum().item()
    if change["source"] == 0:
        raise DvaError(
            "flicker is undefined: the source does not change between frames inside the mask (fewer than 2 frames, "
            "an empty mask, or a still video)"
        )
    return change["edited"] / change["source"]
