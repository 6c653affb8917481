"""`Maintenance`: the background threads of a process that serves an index (a service worker,
a shard replica on Ray Serve): flush the write buffer when the flush policy says so (taking
the write role when it is free) and merge segments as the merge policy says."""

from __future__ import annotations

import logging
import threading


class Maintenance:
    """Two daemon threads over ``index`` (a `LiveIndex` or `ShardedIndex`), started by `start`.

    Args:
        index: what to maintain.
        flush_check_seconds: how often the flush policy is asked.
        merge_check_seconds: how often the merge policy is asked (as the writer only).
    """

    def __init__(self, index, flush_check_seconds: float, merge_check_seconds: float) -> None:
        self.index = index
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._every, args=(flush_check_seconds, index.maintain),
                                          name="flush", daemon=True),
                         threading.Thread(target=self._every, args=(merge_check_seconds, self._merge),
                                          name="merge", daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def _merge(self) -> None:
        if self.index.writer is not None:
            self.index.merge()

    def _every(self, seconds: float, action) -> None:
        while not self._stop.wait(seconds):
            try:
                action()
            except Exception:  # logged, retried on the next tick: a failed flush loses nothing (the log holds it)
                logging.getLogger("lsr.service").exception("index maintenance (%s) failed", action.__name__)
