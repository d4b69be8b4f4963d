"""The query batcher: queries of one model embedded together, then searched per collection.

``workers`` threads each take every query waiting (up to ``max_batch``), run the model on them
with one core, and search each collection once for all of that batch's queries, through the
library's one search path (:func:`lookalike.search.engine.search`) on the collection's current
snapshot. Nothing waits for a batch to fill: a lone query runs at once, and queries arriving
while the workers are busy are batched together. Letting ONNX Runtime, or BLAS for the top-k,
spread each query over every core instead makes concurrent queries fight for the same cores;
see BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lookalike.collection import Collection
from lookalike.encode.base import ImageEncoder
from lookalike.encode.models import ModelSpec
from lookalike.search import engine as search
from lookalike.search.engine import SearchResult

log = logging.getLogger(__name__)


@dataclass
class _Query:
    collection: Collection
    image: Image.Image
    k: int
    min_score: float | None
    future: Future[list[SearchResult]]


class QueryBatcher:
    """Embeds queries for one model and searches them, a batch at a time."""

    def __init__(
        self, spec: ModelSpec, embedder: ImageEncoder, *, workers: int, max_batch: int
    ) -> None:
        self.spec = spec
        self.embedder = embedder
        self.max_batch = max(1, max_batch)
        self._queue: queue.SimpleQueue[_Query | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"query-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def warm_up(self) -> None:
        side = self.spec.input_size
        self.embedder.embed_images([Image.new("RGB", (side, side))])

    def submit(
        self, collection: Collection, image: Image.Image, *, k: int, min_score: float | None
    ) -> Future[list[SearchResult]]:
        """Search ``collection`` for the decoded RGB ``image``; the future holds the results."""
        future: Future[list[SearchResult]] = Future()
        self._queue.put(_Query(collection, image, k, min_score, future))
        return future

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            # A query whose client went away is dropped here; the others can no longer be
            # cancelled, so setting their result below cannot fail.
            live = [q for q in batch if q.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)
            if stop:
                return

    def _run(self, batch: list[_Query]) -> None:
        try:
            vectors = self.embedder.embed_images([q.image for q in batch])
        except Exception as exc:
            log.exception("embedding %d queries failed", len(batch))
            for q in batch:
                q.future.set_exception(exc)
            return
        groups: dict[tuple[int, int, float | None], list[int]] = {}
        for i, q in enumerate(batch):
            groups.setdefault((id(q.collection), q.k, q.min_score), []).append(i)
        for rows in groups.values():
            first = batch[rows[0]]
            collection = first.collection
            try:
                described = search.DescribedQueries(
                    np.stack([vectors[i] for i in rows]), [None] * len(rows), [None] * len(rows)
                )
                found = search.search(
                    collection.snapshot(),
                    collection.store,
                    described,
                    k=first.k,
                    min_score=first.min_score,
                )
            except Exception as exc:
                for i in rows:
                    batch[i].future.set_exception(exc)
                continue
            for i, outcome in zip(rows, found, strict=True):
                batch[i].future.set_result(outcome.results)
