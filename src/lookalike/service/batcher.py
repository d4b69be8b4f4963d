"""The query batcher: queries of one model described together, then searched per collection.

``workers`` threads each take every query waiting (up to ``max_batch``), describe them as the
library describes any query (:meth:`lookalike.collection.Collection.describe`: the object cut
from a photo on a plain background too, a region of the photo, the query localization asked
for) in one model run per description setting, and search each collection once for all of
that batch's queries with the same options, through the library's one search path
(:func:`lookalike.search.engine.search`) on the collection's current snapshot. So an upload
gets exactly what ``lookalike search`` and ``Collection.search`` give for the same image.
Nothing waits for a batch to fill: a lone query runs at once, and queries arriving while the
workers are busy are batched together. Letting ONNX Runtime, or BLAS for the top-k, spread
each query over every core instead makes concurrent queries fight for the same cores; see
BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from PIL import Image

from lookalike.collection import Collection
from lookalike.encode.base import ImageEncoder
from lookalike.encode.features import Localize
from lookalike.encode.models import ModelSpec
from lookalike.search import engine as search
from lookalike.search.engine import QueryOutcome, Region, Text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryOptions:
    """What a query asks for, besides its image: how its results are ranked (queries of the
    same collection ranked alike are searched together) and how it is localized."""

    ranking: search.SearchOptions
    localize: Localize | None = None


@dataclass
class _Query:
    collection: Collection
    image: Image.Image | Region | Text
    options: QueryOptions
    future: Future[QueryOutcome]


class QueryBatcher:
    """Describes queries for one model and searches them, a batch at a time."""

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
        self, collection: Collection, image: Image.Image | Region | Text, options: QueryOptions
    ) -> Future[QueryOutcome]:
        """Search ``collection`` for the decoded RGB ``image`` (or a region of one: a decoded
        image needs no store to describe; or words, with or without such an image); the
        future holds the outcome."""
        future: Future[QueryOutcome] = Future()
        self._queue.put(_Query(collection, image, options, future))
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
        # One model run per description setting: every collection of this batcher has its
        # model, so queries of several collections are described together.
        # A query of words is described on its own: its words are matched to its collection's
        # vocabulary, and words that name nothing fail that query only.
        by_description: dict[tuple[Localize, int], list[_Query]] = {}
        for q in batch:
            setting = q.collection.query_localization(q.options.localize)
            alone = id(q) if isinstance(q.image, Text) else 0
            by_description.setdefault((setting, alone), []).append(q)
        for (setting, _), queries in by_description.items():
            try:
                described = queries[0].collection.describe(
                    [q.image for q in queries], localize=setting
                )
            except Exception as exc:
                log.exception("describing %d queries failed", len(queries))
                for q in queries:
                    q.future.set_exception(exc)
                continue
            self._search(queries, described)

    @staticmethod
    def _search(queries: list[_Query], described: search.DescribedQueries) -> None:
        """Each collection searched once for its queries with the same options."""
        groups: dict[tuple[int, search.SearchOptions], list[int]] = {}
        for row, q in enumerate(queries):
            groups.setdefault((id(q.collection), q.options.ranking), []).append(row)
        for rows in groups.values():
            first = queries[rows[0]]
            collection = first.collection
            try:
                found = search.search(
                    collection.snapshot(),
                    collection.store,
                    described.take(rows),
                    first.options.ranking,
                    calibration=collection.calibration(),
                )
            except Exception as exc:
                for row in rows:
                    queries[row].future.set_exception(exc)
                continue
            for row, outcome in zip(rows, found, strict=True):
                queries[row].future.set_result(outcome)
