"""The search index of a large collection: chosen by size, kept beside the store, followed.

A collection's meta key ``index`` says which index it searches with: ``auto`` (the default:
exact below :data:`lookalike.config.ANN_MIN_IMAGES` images, :data:`lookalike.config.ANN_KIND`
from there on), ``exact``, ``ivf`` or ``hnsw`` (``lookalike index --index KIND``).

An approximate index (:class:`lookalike.index.ann.AnnIndex`) lives in ``<db>.ann`` (a JSON
header) and the data files it names, written atomically and opened memory-mapped in O(1)
(see :mod:`lookalike.index.ann`). :class:`FollowedIndex` opens it and checks it belongs to
this store; if it is missing or torn it builds it from the store in batches (a sample trains
it; never every vector at once). Then it catches up with the store's change feed (rows
written since the cursor recorded in the header; ids no longer indexed are removed), so a
search never trusts a stale index.

Writers (``Collection.add``, ``remove``, ``import``) save it after their changes. A rebuild
that an index needs while it can still serve (HNSW tombstones past a fifth of it, a refitted
codec, another kind) runs in a background thread started by the writer: searches and writes
go on against the current index (queries through the codec it was built with, which is
saved beside it) and the new one is swapped in, caught up with the changes made meanwhile,
when it is done. A process that only reads never rebuilds an index it can search.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lookalike.index.ann import AnnIndex, SearchSettings

from lookalike import config
from lookalike.index.base import IdFilter, VectorCodec
from lookalike.index.exact import ExactIndex
from lookalike.index.registry import INDEX_SETTINGS
from lookalike.store.base import MetadataStore
from lookalike.types import IndexCapabilities

log = logging.getLogger(__name__)


def setting(store: MetadataStore) -> str:
    return store.get_meta("index") or "auto"


def set_setting(store: MetadataStore, value: str) -> None:
    if value not in INDEX_SETTINGS:
        raise ValueError(f"unknown index {value!r}; choose one of {', '.join(INDEX_SETTINGS)}")
    store.set_meta("index", value)


def kind_for(value: str, count: int) -> str:
    """The index a collection of ``count`` images searches with under setting ``value``."""
    if count == 0:
        return "exact"  # nothing to train an approximate index on
    if value == "auto":
        return config.ANN_KIND if count >= config.ANN_MIN_IMAGES else "exact"
    return value


def path_for(store: MetadataStore) -> Path:
    """Where the store keeps its approximate index (a store that keeps none has none)."""
    path = store.index_file()
    if path is None:
        raise ValueError("this store keeps no approximate index: it searches in its database")
    return path


def search_settings() -> SearchSettings:
    from lookalike.index.ann import SearchSettings

    return SearchSettings(nprobe=config.ANN_NPROBE, ef_search=config.ANN_EF_SEARCH)


@dataclass(frozen=True)
class Target:
    """What a collection's index should be, by its settings: the kind and the codec its
    vectors go through (``codec_key`` names the fitted codec: kind and codec generation;
    ``codec_kind`` is the codec's class in :data:`lookalike.index.codec.CODEC_KINDS`, None for
    no codec)."""

    kind: str
    codec: VectorCodec | None = field(compare=False)  # named by codec_key
    codec_key: str
    codec_kind: str | None = "pca"


@dataclass
class _Built:
    """An index built from the store, with what it is current to."""

    index: AnnIndex
    target: Target
    generation: int
    cursor: Any
    seconds: float


class FollowedIndex:
    """An approximate index kept in step with a store (see the module docstring).

    It serves searches with the index it holds (``target`` is what it was built for: the
    codec that queries must go through with it) while the store's settings may already ask
    for another (``wanted``): a refitted codec, another kind, or a rebuild to drop HNSW
    tombstones. :meth:`maintain` (run by writers) rebuilds in a background thread; searches
    and writes go on against the current index, which keeps following the store, and the
    new index is swapped in, caught up with what was written meanwhile, when it is done.
    """

    def __init__(self, store: MetadataStore, wanted: Target) -> None:
        self.store = store
        self.wanted = wanted
        self.target = wanted  # of the index held (set by loading or building)
        self.path = path_for(store)
        self.index: AnnIndex | None = None
        self.generation = -1
        self.cursor: Any = None  # the store's change cursor the index is current to
        self.saved_generation = -2
        self.build_seconds: float | None = None  # of the last build in this process
        #: Bumped when a background rebuild is ready: search snapshots include it in their key.
        self.version = 0
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()
        self._rebuilding: threading.Thread | None = None
        self._ready: _Built | None = None
        self._cancelled = threading.Event()
        self._swapped_unsaved = False  # a rebuilt index swapped in, not saved since
        self._unsaved = False  # a writer's changes followed, not saved since
        self._saved_at = time.monotonic()  # of the last save, or of loading

    @property
    def kind(self) -> str:
        return self.target.kind

    @property
    def codec(self) -> VectorCodec | None:
        """The codec of the index held: queries searched against it go through this one."""
        return self.target.codec

    @property
    def codec_key(self) -> str:
        return self.target.codec_key

    def retarget(self, wanted: Target) -> None:
        """The store's settings now ask for ``wanted`` (a new codec, another kind)."""
        with self._lock:
            self.wanted = wanted
            if self.index is None:
                self.target = wanted

    def current(self) -> AnnIndex:
        """The index, loaded or built on first use, caught up with the store. Thread-safe:
        the service's query workers call it at once; one of them loads or follows."""
        with self._lock:
            self._swap_in_rebuilt()
            if self.index is None and not self._load():
                self.rebuild()
            if self.store.generation() != self.generation:
                self._follow()
            assert self.index is not None
            return self.index

    def _load(self) -> bool:
        from lookalike.index import ann as ann_index

        ann_index.remove_orphans(self.path)  # what a crashed save left
        loaded = ann_index.load(self.path, settings=search_settings())
        if loaded is None:
            return False
        index, header = loaded
        if header.get("store") != _store_id(self.store):
            log.info("%s was built for another store: rebuilding", self.path)
            return False
        target = self.wanted
        if (header.get("kind"), header.get("codec")) != (target.kind, target.codec_key):
            # Built for an earlier codec (or kind): still a true index of the store's vectors
            # through the codec saved with it; searched with that codec until a writer's
            # background rebuild replaces it.
            readable, saved = _saved_codec(self.path, header)
            if not readable:
                log.info("%s: made for another codec, not saved with it: rebuilding", self.path)
                return False
            target = Target(header["kind"], saved, header["codec"], header.get("codec_kind"))
        self.target = target
        self.index, self.generation, self.cursor = index, header["generation"], header["cursor"]
        self.saved_generation = self.generation
        return True

    def rebuild(self) -> None:
        """Build the wanted index from the store now, on this thread (no index to serve from,
        or a big import to take in), and save it."""
        self._install(self._build(self.wanted))
        if self.store.generation() != self.generation:  # written to while building
            self._follow()
        self.save()

    def _build(self, target: Target) -> _Built:
        """Train on a sample, then add every row, a batch at a time."""
        from lookalike.index.ann import AnnIndex

        started = time.perf_counter()
        generation, cursor = self.store.generation(), self.store.cursor()
        count = self.store.count()
        log.info("building a %s index of %d images", target.kind, count)
        index = AnnIndex.train(
            target.kind,
            self._training_sample(target.codec),
            count,
            settings=search_settings(),
        )
        for ids, vectors in self.store.vector_batches(config.SCAN_BATCH):
            if self._cancelled.is_set():
                raise _Cancelled
            index.add(ids, _encode(target.codec, vectors))
        return _Built(index, target, generation, cursor, time.perf_counter() - started)

    def _install(self, built: _Built) -> None:
        with self._lock:
            self.index, self.target = built.index, built.target
            self.generation, self.cursor = built.generation, built.cursor
            self.build_seconds = built.seconds

    def _training_sample(self, codec: VectorCodec | None) -> np.ndarray:
        """Encoded vectors of a random sample, fetched a batch at a time (images removed
        meanwhile, by a writer here or in another process, are left out of it)."""
        from lookalike.index import ann as ann_index

        ids = self.store.ids()
        size = ann_index.training_size(len(ids))
        if len(ids) > size:
            ids = np.sort(np.random.default_rng(0).choice(ids, size, replace=False))
        parts = []
        for start in range(0, len(ids), config.SCAN_BATCH):
            vectors = self.store.vectors_present(ids[start : start + config.SCAN_BATCH])[1]
            if len(vectors):
                parts.append(_encode(codec, vectors))
        dims = codec.dims if codec is not None else 0
        return np.concatenate(parts) if parts else np.empty((0, dims), np.float32)

    def _follow(self) -> None:
        """Apply the rows written and the images removed since the cursor."""
        assert self.index is not None
        generation = self.store.generation()
        behind = self.store.count() - len(self.index)
        if behind > max(
            config.SCAN_BATCH, len(self.index) // 2
        ):  # a big import: rebuild in batches
            self.rebuild()
            return
        changes = self.store.vectors_since(self.cursor)
        gone = (
            np.setdiff1d(self.index.ids, changes.all_ids, assume_unique=True)
            if changes.all_ids is not None
            else ()
        )
        if len(gone):
            self.index.remove(gone)
        if changes.vectors is not None:
            self.index.add(changes.ids, _encode(self.codec, changes.vectors))
        self.generation, self.cursor = generation, changes.latest

    # --- rebuilding in the background ------------------------------------------------------

    def rebuild_reason(self) -> str | None:
        """Why the index held should be rebuilt (None: it should not)."""
        if self.index is None:
            return None
        if (self.target.kind, self.target.codec_key) != (self.wanted.kind, self.wanted.codec_key):
            return f"{self.target.codec_key} -> {self.wanted.codec_key}"
        if self.index.needs_rebuild:
            return "many removed images"
        return None

    def maintain(self) -> bool:
        """Start a background rebuild if one is needed and none is running (writers call this
        after their changes); True if one is running."""
        with self._lock:
            if self._rebuilding is not None and self._rebuilding.is_alive():
                return True
            reason = self.rebuild_reason()
            if reason is None or self._ready is not None:
                return self._ready is not None
            log.info("%s: rebuilding in the background (%s)", self.path, reason)
            self._rebuilding = threading.Thread(
                target=self._rebuild_in_background,
                args=(self.wanted,),
                name=f"rebuild-{self.path.name}",
                daemon=True,
            )
            self._rebuilding.start()
            return True

    def _rebuild_in_background(self, target: Target) -> None:
        try:
            built = self._build(target)
            if self._cancelled.is_set():
                return
            self._save(built.index, built.target, built.generation, built.cursor, built.seconds)
        except _Cancelled:
            log.info("%s: background rebuild cancelled", self.path)
            return
        except Exception:
            log.exception("%s: background rebuild failed; the current index stays", self.path)
            return
        with self._lock:
            self._ready = built
            self.version += 1
        log.info("%s: rebuilt in %.1f s, swapping it in", self.path, built.seconds)

    def _swap_in_rebuilt(self) -> None:
        """Put a finished background rebuild in place of the index held (under the lock);
        the caller then follows it to the store's present."""
        built, self._ready = self._ready, None
        if built is None:
            return
        if built.target != self.wanted:  # maintain() starts the next one
            log.info("%s: rebuilt for %s, now %s is wanted", self.path, built.target, self.wanted)
        self._install(built)
        # Saved by the rebuild, but a writer may have saved the old index over it meanwhile:
        # the next save (a writer's, or closing) writes it again.
        self.saved_generation = -2
        self._swapped_unsaved = True

    def cancel(self) -> None:
        """Stop a background rebuild (the collection no longer uses this index) and wait."""
        self._cancelled.set()
        thread = self._rebuilding
        if thread is not None:
            thread.join()

    def wait_for_rebuild(self) -> None:
        """Closing: let a running background rebuild finish and swap it in, then save what
        this process changed since its last save."""
        thread = self._rebuilding
        if thread is not None:
            thread.join()
        if self._ready is not None:
            self.current()
        if self._swapped_unsaved or self._unsaved:
            self.save()

    # --- saving ------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the index and the cursor it is current to (a no-op when already saved)."""
        with self._lock:
            self._saved_at = time.monotonic()
            if self.index is None or self.saved_generation == self.generation:
                return
            generation = self.generation
            if not self._save(self.index, self.target, generation, self.cursor, self.build_seconds):
                return
            self.saved_generation = generation
            self._swapped_unsaved = self._unsaved = False

    def save_after_change(self) -> None:
        """A writer changed the store: save now if the last save is
        :data:`~lookalike.config.ANN_SAVE_SECONDS` old, else leave it to a later writer or
        to closing (:meth:`wait_for_rebuild`)."""
        with self._lock:
            if self.index is None or self.saved_generation == self.generation:
                return
            self._unsaved = True
            if time.monotonic() - self._saved_at < config.ANN_SAVE_SECONDS:
                return
            self.save()

    def _save(
        self,
        index: AnnIndex,
        target: Target,
        generation: int,
        cursor: Any,
        seconds: float | None,
    ) -> bool:
        """Write the index beside the store; False (logged) when the disk refused: the index
        is only a copy of the store's vectors, so a failed save costs the next process a
        catch-up or a rebuild, never a write."""
        try:
            with self._save_lock:
                self._write(index, target, generation, cursor, seconds)
        except (OSError, RuntimeError) as error:  # FAISS reports a full disk as RuntimeError
            log.error(
                "%s: the index could not be saved (%s); the next open catches up or rebuilds",
                self.path,
                error,
            )
            return False
        return True

    def _write(
        self,
        index: AnnIndex,
        target: Target,
        generation: int,
        cursor: Any,
        seconds: float | None,
    ) -> None:
        index.save(
            self.path,
            {
                "codec": target.codec_key,
                "codec_kind": target.codec_kind if target.codec is not None else None,
                "store": _store_id(self.store),
                "generation": generation,
                "cursor": cursor,
                "built_seconds": seconds,
            },
            codec=target.codec.to_bytes() if target.codec is not None else None,
        )

    def describe(self) -> dict[str, Any]:
        """What ``lookalike info`` shows of the index."""
        index = self.current()
        names = _data_files(self.path)  # index, ids (per image), codec (fixed size)
        files = [self.path, *(self.path.with_name(n) for n in names[:2])]
        size = sum(f.stat().st_size for f in files if f.exists())
        codec = self.path.with_name(names[2]) if len(names) > 2 else None
        return {
            "kind": self.kind,
            "dims": index.dims,
            "images": len(index),
            "file": str(self.path),
            "bytes": size,
            "bytes_per_image": round(size / max(len(index), 1), 1),
            "codec_bytes": codec.stat().st_size if codec is not None and codec.exists() else 0,
            "rebuilding": self._rebuilding is not None and self._rebuilding.is_alive(),
        }


class _Cancelled(Exception):
    """A background rebuild was cancelled."""


def _encode(codec: VectorCodec | None, vectors: np.ndarray) -> np.ndarray:
    return codec.transform(vectors) if codec is not None else vectors


def _saved_codec(path: Path, header: dict[str, Any]) -> tuple[bool, VectorCodec | None]:
    """(readable, the codec saved with an index: None when it had none)."""
    from lookalike.index import ann as ann_index
    from lookalike.index import codec as codecs

    if "codec_kind" not in header:  # saved before codecs were kept with the index
        return False, None
    if header["codec_kind"] is None:
        return True, None
    data = ann_index.read_codec(path, header)
    if data is None:
        return False, None
    return True, codecs.codec_class(header["codec_kind"]).from_bytes(data)


def remove_index_files(path: Path) -> None:
    """Delete a saved index (when the collection goes back to exact search)."""
    from lookalike.index import ann as ann_index

    ann_index.remove_files(path)


def _data_files(path: Path) -> list[str]:
    import json

    try:
        header = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [
        header[k] for k in ("index_file", "ids_file", "codec_file") if header.get(k)
    ]  # order kept


def _store_id(store: MetadataStore) -> str:
    """A random id given to the store once, so that an index file left beside a new store
    of the same name is never taken for its index."""
    value = store.get_meta("store_id")
    if value is None:
        value = uuid.uuid4().hex
        store.set_meta("store_id", value)
    return value


class StoreScan:
    """An exact index that scans the store a batch at a time instead of holding the vectors
    (``search --exact`` on a large collection). Read-only."""

    def __init__(self, store: MetadataStore, codec: VectorCodec | None) -> None:
        self.store = store
        self.codec = codec

    @property
    def capabilities(self) -> IndexCapabilities:
        return IndexCapabilities(
            exact=True, filter=True, reconstruct=True, snapshot=True, persist=False
        )

    @property
    def ids(self) -> np.ndarray:
        return self.store.ids()

    def __len__(self) -> int:
        return self.store.count()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> StoreScan:
        raise TypeError("a store scan is read-only")

    def remove(self, ids: np.ndarray) -> StoreScan:
        raise TypeError("a store scan is read-only")

    def save(self, path: Path) -> None:
        raise TypeError("a store scan is not saved")

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        raw = self.store.vectors_of(ids)
        return self.codec.transform(raw) if self.codec is not None else raw

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filter: IdFilter | None = None,
        exclude: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self.store, self.codec, queries, k, filter=filter, exclude=exclude)


def exact_search(
    store: MetadataStore,
    codec: VectorCodec | None,
    queries: np.ndarray,
    k: int,
    *,
    filter: IdFilter | None = None,
    exclude: Sequence[int | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of an exact scan of the store, a batch at a time (``search --exact``
    on a collection too large to hold in memory)."""
    queries = np.atleast_2d(queries).astype(np.float32)
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for ids, vectors in store.vector_batches(config.SCAN_BATCH):
        if filter is not None:
            keep = np.isin(ids, filter)
            ids, vectors = ids[keep], vectors[keep]
            if not len(ids):
                continue
        encoded = codec.transform(vectors) if codec is not None else vectors
        scores, found = ExactIndex(ids, encoded).search(queries, k, exclude=exclude)
        scores = np.concatenate([best_scores, scores], axis=1)
        found = np.concatenate([best_ids, found], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(scores, order, axis=1)
        best_ids = np.take_along_axis(found, order, axis=1)
    return best_scores, best_ids
