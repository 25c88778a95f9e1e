"""Work handed to one background thread through a bounded queue, so the caller (the GPU loop) never waits on storage.

`BackgroundWriter(max_pending)` runs each submitted call on one worker thread, in submission order. `submit` blocks
only while `max_pending` calls are queued or running: memory held by pending writes stays bounded. `max_pending=0`
runs each call at once in the caller's thread (the synchronous reference). `wait(futures)` returns when all of them
are done and re-raises the first failure, so a caller that waits before it reports its results never reports a
write that did not happen.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable


class BackgroundWriter:
    def __init__(self, max_pending: int):
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        self.max_pending = max_pending
        self._slots = threading.BoundedSemaphore(max_pending) if max_pending else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dva-writer") if max_pending else None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn(*args)` in the background (at once in this thread when `max_pending` is 0)."""
        if self._pool is None:
            done: Future = Future()
            try:
                done.set_result(fn(*args))
            except Exception as err:  # noqa: BLE001 - reported by wait(), like a background failure
                done.set_exception(err)
            return done
        self._slots.acquire()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    @staticmethod
    def wait(futures: Iterable[Future]) -> None:
        """Block until every future is done; raise the first failure (in submission order)."""
        futures = list(futures)
        BackgroundWriter.settle(futures)
        for future in futures:
            if future.exception() is not None:
                raise future.exception()

    @staticmethod
    def settle(futures: Iterable[Future]) -> None:
        """Block until every future is done, whatever its outcome (after the caller failed for its own reason)."""
        for future in futures:
            future.exception()

    def close(self) -> None:
        """Finish what is queued and stop the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
