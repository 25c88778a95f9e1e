"""Stage B, on GPU actors: batches of chunks from any videos → DDIM inversion once → one generation per edit.

A chunk holds frames of one face track (one person) of a video; chunks of every track of every video share the UNet
batches. x_T is stored per chunk (when latents are kept) or loaded when a previous run stored it, so a repeat edit
costs N UNet calls per frame instead of 2N−1. Edited crops go to the work area
`<output>/.work/<video_id>/<edit_id>/face<k>/<chunk>.npy`, where stage C picks them up in frame order.

Both writes go to the stage's `BackgroundWriter`: the UNet starts its next batch (the next edit, or the generation
after an inversion) while the previous results travel to storage. A call returns its result rows only after all of
its writes are done, so stage C never looks for a chunk that is still on its way.
"""

from __future__ import annotations

import io
import json
from typing import Optional

import numpy as np
import torch

from dva.diffusion import ddim_generate
from dva.diffusion.inversion import InversionConfig, invert as invert_x0
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.latents import LatentStore
from dva.runtime.manifest import edit_id
from dva.runtime.background import BackgroundWriter
from dva.runtime.cluster import failure_reason
from dva.crops import crops_to_tensor, tensor_to_crops
from dva.storage import join, write_bytes_atomic


def work_uri(output: str, video_id: str, edit: str, face: int, chunk: int) -> str:
    return join(output, ".work", video_id, edit_id(edit), f"face{face}", f"{chunk:06d}.npy")


def _result(row: dict, edit: str, frames: int = 0, unet_calls: int = 0, error: str = "") -> dict:
    return {"video_id": row["video_id"], "uri": row["uri"], "key": row["key"], "edit": edit,
            "face": row["face"], "chunk": row["chunk"], "num_chunks": row["num_chunks"],
            "pair_chunks": row["pair_chunks"], "num_frames": row["num_frames"],
            "frames": frames, "unet_calls": unet_calls, "error": error or row["error"]}


def _write_crops(uri: str, crops: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, crops, allow_pickle=False)
    write_bytes_atomic(uri, buf.getvalue())


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host → device; through pinned memory on CUDA, so the copy is one DMA queued behind the running work."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def _in_batches(fn, x: torch.Tensor, cond: torch.Tensor, batch: int, memory_format: torch.memory_format
                ) -> torch.Tensor:
    """Run `fn` on batches of exactly `batch` frames in one memory format, the last batch padded by repeating its
    final frame.

    Kernels pick their algorithm (and so their rounding) by shape and memory layout: a fixed batch shape and layout
    make each frame's result independent of which frames share its batch and of whether its x_T was just computed
    or loaded, so reruns and resumed jobs reproduce pixels exactly. Fixed shapes also suit compiled graphs.
    """
    out = []
    for i in range(0, len(x), batch):
        xb, cb = x[i:i + batch], cond[i:i + batch]
        n = len(xb)
        if n < batch:
            xb = torch.cat([xb, xb[-1:].expand(batch - n, *xb.shape[1:])])
            cb = torch.cat([cb, cb[-1:].expand(batch - n, *cb.shape[1:])])
        out.append(fn(xb.contiguous(memory_format=memory_format), cb)[:n])
    return torch.cat(out)


def generate_chunks(model: DiffusionVideoAutoencoder, rows: list[dict], *, output: str, steps: int,
                    batch_frames: int, store_latents: bool, inversion: InversionConfig, device: torch.device,
                    autocast_dtype: Optional[torch.dtype], writer: BackgroundWriter,
                    memory_format: torch.memory_format = torch.contiguous_format) -> list[dict]:
    """Process stage-A rows; return one small row per (chunk, edit) saying what was written (or the error).

    A failure is contained per video: when a batch that mixes videos fails (a missing x_T chunk, a storage error,
    out of memory), each of its videos is run again on its own, with the device's cached memory released first, so
    only the video that fails again gets error rows (one per chunk of it in the batch) and the others finish.
    """
    results = [_result(r, "") for r in rows if r["error"]]
    rows = [r for r in rows if not r["error"]]
    if not rows:
        return results
    settings = dict(output=output, steps=steps, batch_frames=batch_frames, store_latents=store_latents,
                    inversion=inversion, autocast_dtype=autocast_dtype, writer=writer, memory_format=memory_format)
    try:
        return results + _generate(model, rows, device=device, **settings)
    except Exception as err:
        if len({r["video_id"] for r in rows}) == 1:
            return results + [_result(r, "", error=failure_reason(err)) for r in rows]
    by_video: dict[str, list[dict]] = {}
    for r in rows:
        by_video.setdefault(r["video_id"], []).append(r)
    for video_rows in by_video.values():
        if device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            results += _generate(model, video_rows, device=device, **settings)
        except Exception as err:
            results += [_result(r, "", error=failure_reason(err)) for r in video_rows]
    return results


def _generate(model: DiffusionVideoAutoencoder, rows: list[dict], *, output: str, steps: int, batch_frames: int,
              store_latents: bool, inversion: InversionConfig, device: torch.device,
              autocast_dtype: Optional[torch.dtype], writer: BackgroundWriter,
              memory_format: torch.memory_format = torch.contiguous_format) -> list[dict]:
    """Chunks without a stored x_T are inverted by `inversion`; every edit is an N-step DDIM generation."""
    results, writes = [], []

    def invert(x, c):
        return invert_x0(inversion, model, x, c, steps, autocast_dtype=autocast_dtype)

    def generate(x, c):
        return ddim_generate(model, x, c, steps, autocast_dtype=autocast_dtype)

    sizes = [len(r["z_lnd"]) for r in rows]
    inverse_calls = inversion.inversion_calls(steps)

    def cond(i: int, z_id: np.ndarray) -> torch.Tensor:
        # Per chunk, so each frame's z_face is computed with the same shapes whatever batch the chunk came in; and
        # from fresh copies: rows arrive as views into Arrow buffers whose alignment changes BLAS rounding.
        with torch.no_grad():
            return model.face_code(torch.tensor(z_id, device=device)[None],
                                   torch.tensor(rows[i]["z_lnd"], device=device))

    try:
        x_T: list[Optional[torch.Tensor]] = [None] * len(rows)
        to_invert = [i for i, r in enumerate(rows) if not r["has_x_T"]]
        for i, r in enumerate(rows):
            if r["has_x_T"]:
                stored = LatentStore(output, r["video_id"]).load_x_T(r["face"], r["chunk"])
                x_T[i] = _to_device(torch.from_numpy(stored), device)
        if to_invert:
            x0 = _to_device(crops_to_tensor(np.concatenate([rows[i]["crops"] for i in to_invert])), device)
            c = torch.cat([cond(i, rows[i]["z_id"]) for i in to_invert])
            inverted = _in_batches(invert, x0, c, batch_frames, memory_format)
            for i, part in zip(to_invert, inverted.split([sizes[i] for i in to_invert])):
                x_T[i] = part
                if store_latents:
                    writes.append(writer.submit(LatentStore(output, rows[i]["video_id"]).save_x_T, rows[i]["face"],
                                                rows[i]["chunk"], part.cpu().numpy()))

        edits = [json.loads(r["edits"]) for r in rows]
        for i, r in enumerate(rows):
            if not edits[i]:  # encode-only: the chunk is done once its x_T is stored
                results.append(_result(r, "", sizes[i], 0 if r["has_x_T"] else inverse_calls * sizes[i]))
        for k in range(max(len(e) for e in edits)):
            members = [i for i, e in enumerate(edits) if len(e) > k]
            c = torch.cat([cond(i, rows[i]["z_edits"][k]) for i in members])
            edited = _in_batches(generate, torch.cat([x_T[i] for i in members]), c, batch_frames, memory_format)
            for i, part in zip(members, edited.split([sizes[i] for i in members])):
                r = rows[i]
                writes.append(writer.submit(_write_crops, work_uri(output, r["video_id"], edits[i][k], r["face"],
                                                                   r["chunk"]), tensor_to_crops(part)))
                calls = steps if r["has_x_T"] or k > 0 else inverse_calls + steps
                results.append(_result(r, edits[i][k], sizes[i], calls * sizes[i]))
    except BaseException:
        writer.settle(writes)  # this attempt's writes land before a retry writes the same keys
        raise
    writer.wait(writes)
    return results
