"""One writer per collection: every change runs on one thread, one after the other.

Index runs, uploads, deletions, labels, refits of the fitted models and closing the
collection are all submitted here (as datasette does with its one write thread), so two
changes never interleave: an upload's file and its row, or a deletion's row and its file,
land together before the next change starts. Readers never wait for the writer: they search
an immutable snapshot (:mod:`lookalike.search.snapshot`).

A write submitted from the writer thread itself runs at once (a change made of smaller
changes: an upload indexes a file).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from lookalike.errors import CollectionClosed

log = logging.getLogger(__name__)

T = TypeVar("T")


class Writer:
    """A thread that runs submitted functions in order; started on the first write."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def on_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, change: Callable[[], T]) -> Future[T]:
        """Queue ``change``; its future holds its result or its exception."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise CollectionClosed(f"collection {self.name} is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name=f"writer-{self.name}", daemon=True
                )
                self._thread.start()
            self._queue.put((change, future))
        return future

    def run(self, change: Callable[[], T]) -> T:
        """Run ``change`` on the writer thread and wait for it (at once if already there)."""
        if self.on_writer_thread():
            return change()
        return self.submit(change).result()

    def close(self, last: Callable[[], None] | None = None) -> None:
        """Run the changes already queued, then ``last`` (closing the store), then stop.
        Later submissions raise :class:`CollectionClosed`."""
        if self.on_writer_thread():
            raise RuntimeError("a writer cannot close itself from inside a change")
        with self._lock:
            if self._closed:
                return
            thread = self._thread
            if thread is not None:
                self._queue.put((last or (lambda: None), Future()))
                self._queue.put(None)
            self._closed = True
        if thread is not None:
            thread.join()
        elif last is not None:
            last()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            change, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = change()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
