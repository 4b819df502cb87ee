"""Batches loaded ahead in a background thread."""

from __future__ import annotations

import queue
import threading
from typing import Iterable


class Prefetcher:
    """Loads the next batches in a background thread (for num_workers=0): zarr decoding,
    augmentation or rendering overlap the training step. Order is preserved, so results are
    unchanged."""

    def __init__(self, iterable: Iterable, depth: int):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(iter(iterable),), daemon=True)
        self._t.start()

    def _put(self, msg) -> bool:
        """Put unless the consumer has gone (closed); never blocks forever."""
        while not self._stop.is_set():
            try:
                self._q.put(msg, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it):
        try:
            for item in it:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # surfaced in the training thread
            self._put(("error", exc))

    def __iter__(self):
        while True:
            kind, item = self._q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item

    def close(self):
        self._stop.set()
        self._t.join(timeout=5)
