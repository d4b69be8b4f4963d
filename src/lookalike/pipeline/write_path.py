"""The one write path: how every change reaches a collection, whichever door it came through.

``Collection.add`` and the other changes of the Python API and the CLI, uploads over HTTP,
index runs on Ray and ``lookalike import`` all write through the collection's
:class:`WritePath`:

- every change runs on the collection's writer thread (:mod:`lookalike.pipeline.writer`),
  after the changes queued before it, and the search snapshot is brought up to date before
  it returns (searches never wait for it);
- rows are written a batch at a time (:meth:`WritePath.write_batch`, one transaction each),
  which the store's change feed records;
- a whole change (an upload, a deletion, new labels, an index run or an import once its
  batches are in) is then *settled*: the models fitted on the collection are refitted where
  stale (:mod:`lookalike.search.fitting`), and the approximate index, if the collection has
  one, follows the store's change feed, is saved beside the store now and then
  (:data:`lookalike.config.ANN_SAVE_SECONDS`) and when the collection closes, and is rebuilt
  in the background when it needs to be (:mod:`lookalike.index.persistent`).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TypeVar

from lookalike import config
from lookalike.encode.models import Embedder, ModelSpec
from lookalike.errors import NotInCollectionError, Unavailable
from lookalike.pipeline import indexer
from lookalike.pipeline.indexer import BatchSink, IndexReport, Plan
from lookalike.pipeline.writer import Writer
from lookalike.search import fitting
from lookalike.search.snapshot import SnapshotCache
from lookalike.store.base import MetadataStore
from lookalike.store.records import EmbeddedImage, SkippedFile

log = logging.getLogger(__name__)

T = TypeVar("T")


class WritePath:
    """The writes of one collection (see the module docstring). Safe to share between
    threads; a change made on the writer thread (a change made of smaller ones) runs at once.
    """

    def __init__(self, store: MetadataStore, snapshots: SnapshotCache, name: str) -> None:
        self.store = store
        self.snapshots = snapshots
        self.writer = Writer(name)

    # --- changes -----------------------------------------------------------------------------

    def change(self, change: Callable[[], T]) -> T:
        """Run ``change`` on the writer thread, after the changes queued before; the search
        snapshot is brought up to date before it returns. Nothing is settled: a step of a
        larger change (a batch of an index run), or a change that leaves the vectors, labels
        and settings as they are (clusters)."""
        if self.writer.on_writer_thread():
            return change()

        def change_and_publish() -> T:
            result = change()
            self.snapshots.refresh()
            return result

        return self.writer.run(change_and_publish)

    def stream(
        self, changes: Iterable[Callable[[], None]], *, ahead: int = config.WRITES_AHEAD
    ) -> None:
        """Run ``changes`` one after the other on the writer thread (each as :meth:`change`)
        while this thread makes the next ones: a bulk import reads and converts a batch while
        the one before is written. At most ``ahead`` changes wait at a time (memory stays
        bounded); once one fails, none after it runs, and its error is raised here."""
        failed = False

        def guarded(change: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:  # on the writer thread, so ``failed`` needs no lock
                nonlocal failed
                if failed:
                    return
                try:
                    change()
                except BaseException:
                    failed = True
                    raise
                self.snapshots.refresh()

            return run

        if self.writer.on_writer_thread():
            for change in changes:
                change()
            return
        pending: deque[Future[None]] = deque()
        try:
            for change in changes:
                pending.append(self.writer.submit(guarded(change)))
                while len(pending) > ahead:
                    pending.popleft().result()
        finally:
            # every change queued is waited for, also when making the next one failed: a
            # caller that goes on (to its next file) finds the writes of this one done
            errors = [f.exception() for f in pending]
        for error in errors:
            if error is not None:
                raise error

    def commit(self, change: Callable[[], T]) -> T:
        """Run ``change`` and settle it, as one change of the writer."""

        def change_and_settle() -> T:
            result = change()
            self._settle()
            return result

        return self.change(change_and_settle)

    def settle(self) -> None:
        """Settle what was written since the last settling (after a run of batches)."""
        self.change(self._settle)

    def _settle(self) -> None:
        fitting.refresh(self.store)
        self.snapshots.save_index()

    # --- rows --------------------------------------------------------------------------------

    def write_batch(
        self,
        embedded: Iterable[EmbeddedImage],
        skipped: Iterable[SkippedFile],
        forget: Iterable[str] = (),
    ) -> None:
        """Write one batch of rows (vectors, files skipped, files to try again) as one change."""
        rows, bad, gone = list(embedded), list(skipped), list(forget)
        self.change(lambda: self.store.write_batch(rows, bad, gone))

    def remove(self, paths: Iterable[str]) -> int:
        """Remove the rows of these files as one change; how many there were."""
        doomed = list(paths)
        return self.change(lambda: self.store.remove(doomed))

    @contextmanager
    def batches(self, rows: int = 0) -> Iterator[BatchSink]:
        """A sink for a run of batches (:class:`lookalike.pipeline.indexer.BatchSink`), each
        batch its own change; the run is settled when it ends, also when it stops early (a
        cancelled job, a failed batch): the batches committed before stay, and count.
        ``rows``: about how many rows the run adds, for the store's bulk load
        (:meth:`~lookalike.store.base.MetadataStore.bulk_load`), which ends after the
        settling (a codec fitted by it is in place before a deferred index is built)."""
        with self.store.bulk_load(rows):
            try:
                yield self
            except Exception:
                try:
                    self.settle()
                except Exception as error:  # the run's own error is the one to report (a full
                    # disk fails both): this one only with -v, and the next run settles them
                    log.info(
                        "could not settle the batches written before the run stopped: %s", error
                    )
                raise
            self.settle()

    # --- what the doors ask for ----------------------------------------------------------------

    def index(
        self,
        work: Plan,
        spec: ModelSpec,
        embedder: Callable[[], Embedder],
        *,
        ray: str | None = None,
        batch_size: int = config.BATCH_SIZE,
        progress: Callable[[int], None] | None = None,
    ) -> IndexReport:
        """Carry out an index plan: decode and embed on this machine's cores (with the model
        ``embedder`` gives, loaded only when there is something to embed) or, with ``ray``, on
        the Ray cluster at that address ("": a local Ray; see
        :mod:`lookalike.pipeline.ray_runner`); each batch written as one change, the run
        settled at the end."""
        with self.batches(rows=len(work.todo)) as sink:
            if not work.todo and not work.vanished:
                return work.report()
            if ray is not None:
                return ray_runner().run(
                    sink, spec, work, address=ray or None, batch_size=batch_size, progress=progress
                )
            return indexer.run(sink, embedder(), work, batch_size=batch_size, progress=progress)

    def remove_files(self, paths: list[str]) -> int:
        """Remove files (absolute paths), and every file below those that are folders, as one
        settled change; returns the count. If the collection knows nothing of some path
        (neither indexed nor holding indexed files), raises
        :class:`~lookalike.errors.NotInCollectionError` and removes nothing."""

        def change() -> int:
            doomed: list[str] = []
            unknown: list[str] = []
            for path in paths:
                below = self.store.file_states(path)
                if not below and path not in self.store.file_states(os.path.dirname(path)):
                    unknown.append(path)
                doomed.append(path)
                doomed.extend(below)
            if unknown:
                raise NotInCollectionError(unknown)
            return self.store.remove(doomed)

        return self.commit(change)

    def set_labels(self, labels: dict[str, str]) -> int:
        """Give files (absolute paths) a category, as one settled change (the category
        classifier is retrained if anything changed); how many labels changed."""
        return self.commit(lambda: self.store.set_labels(labels))

    # --- closing -------------------------------------------------------------------------------

    def close(self, last: Callable[[], None]) -> None:
        """Finish the writes already queued and a background rebuild of the approximate index,
        if one runs (it is saved, not lost), save what is unsaved, then run ``last``."""

        def closing() -> None:
            self.snapshots.finish_rebuilds()
            last()

        self.writer.close(closing)


def ray_runner():  # type: ignore[no-untyped-def]
    """lookalike.pipeline.ray_runner, or a clear error naming the extra it needs."""
    try:
        from lookalike.pipeline import ray_runner
    except ImportError as exc:
        raise Unavailable(
            f"--ray needs the ray extra: pip install 'lookalike[ray]' ({exc})"
        ) from exc
    return ray_runner
