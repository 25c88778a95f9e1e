"""Stage B's background writer: the UNet goes on while results travel to storage, and nothing is reported early."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

import dva.pipeline.generate as generate
from dva.config import load_config
from dva.diffusion.inversion import InversionConfig
from dva.models.config import ModelConfig
from dva.runtime.background import BackgroundWriter
from dva.runtime.weights import load_model
from tests.unit.test_generate_failures import chunk_row


def test_calls_run_in_order_on_one_background_thread_and_submit_does_not_wait():
    writer, release, seen = BackgroundWriter(4), threading.Event(), []
    first = writer.submit(lambda: (release.wait(5), seen.append(("a", threading.get_ident()))))
    second = writer.submit(lambda: seen.append(("b", threading.get_ident())))
    assert not first.done()  # submit returned while the first call is still blocked
    release.set()
    writer.wait([first, second])
    assert [name for name, _ in seen] == ["a", "b"] and seen[0][1] == seen[1][1] != threading.get_ident()
    writer.close()


def test_the_queue_is_bounded():
    writer, release = BackgroundWriter(2), threading.Event()
    pending = [writer.submit(release.wait, 5) for _ in range(2)]
    third_submitted = threading.Event()
    threading.Thread(target=lambda: (writer.submit(lambda: None), third_submitted.set()), daemon=True).start()
    assert not third_submitted.wait(0.3)  # blocked: two calls are pending
    release.set()
    assert third_submitted.wait(5)
    writer.wait(pending)
    writer.close()


def test_wait_raises_the_first_failure_settle_does_not_and_zero_runs_in_the_callers_thread():
    writer = BackgroundWriter(3)
    futures = [writer.submit(lambda: 1), writer.submit(_fail, "first"), writer.submit(_fail, "second")]
    with pytest.raises(OSError, match="first"):
        writer.wait(futures)
    writer.settle(futures)
    inline = BackgroundWriter(0)
    assert inline.submit(threading.get_ident).result() == threading.get_ident()
    with pytest.raises(OSError, match="now"):
        inline.wait([inline.submit(_fail, "now")])


def _fail(message: str) -> None:
    raise OSError(message)


class WatchesWrites:
    """The tiny model, noting for each UNet call whether a write was in flight at that moment."""

    def __init__(self, model):
        self.model, self.face_code = model, model.face_code
        self.in_flight = 0
        self.calls_during_writes = 0

    def __call__(self, x, t, cond):
        self.calls_during_writes += self.in_flight > 0
        return self.model(x, t, cond)


@pytest.mark.parametrize("queue", [0, 8])
def test_the_unet_goes_on_while_writes_are_in_flight_and_results_come_after_them(queue, tmp_path, monkeypatch):
    model = load_model(load_config(ModelConfig, "tiny", group="model"))
    watch = WatchesWrites(model)
    finished = []

    def slow_write(uri, data):
        watch.in_flight += 1
        time.sleep(0.2)
        (tmp_path / f"w{len(finished)}").write_bytes(data)
        finished.append(uri)
        watch.in_flight -= 1

    monkeypatch.setattr(generate, "write_bytes_atomic", slow_write)
    rows = [chunk_row(model, "a", c, 2, False) for c in range(2)]
    for r in rows:
        r["edits"] = json.dumps(["reconstruct", "identity:other.jpg"])
        r["z_edits"] = np.zeros((2, model.cfg.identity_encoder.dim), np.float32)
    results = generate.generate_chunks(watch, rows, output=str(tmp_path), steps=3, batch_frames=4,
                                       store_latents=False, inversion=InversionConfig(), device=torch.device("cpu"),
                                       autocast_dtype=None, writer=BackgroundWriter(queue))
    assert [r["error"] for r in results] == [""] * 4
    assert len(finished) == 4  # every (chunk, edit) written before its row came back
    assert (watch.calls_during_writes > 0) == (queue > 0)  # the second edit's UNet calls overlap the first's writes


def test_a_failed_background_write_fails_only_its_video(tmp_path, monkeypatch):
    model = load_model(load_config(ModelConfig, "tiny", group="model"))
    real_write = generate.write_bytes_atomic

    def write_fails_for_b(uri, data):
        if "/b/" in uri:
            raise OSError(f"{uri}: connection reset")
        real_write(uri, data)

    monkeypatch.setattr(generate, "write_bytes_atomic", write_fails_for_b)
    rows = [chunk_row(model, v, c, 2, False) for v in "ab" for c in range(2)]
    results = generate.generate_chunks(model, rows, output=str(tmp_path), steps=3, batch_frames=4,
                                       store_latents=False, inversion=InversionConfig(), device=torch.device("cpu"),
                                       autocast_dtype=None, writer=BackgroundWriter(8))
    assert {r["video_id"]: r["error"] for r in results if r["video_id"] == "a"} == {"a": ""}
    assert all("connection reset" in r["error"] for r in results if r["video_id"] == "b")
    assert sorted(p.name for p in (tmp_path / ".work" / "a").rglob("*.npy")) == ["000000.npy", "000001.npy"]
