"""The search index of a large collection: chosen by size, kept beside the store, followed.

A collection's meta key ``index`` says which index it searches with: ``auto`` (the default:
exact below :data:`lookalike.config.ANN_MIN_IMAGES` images, :data:`lookalike.config.ANN_KIND`
from there on), ``exact``, ``ivf`` or ``hnsw`` (``lookalike index --index KIND``).

An approximate index (:class:`lookalike.ann_index.AnnIndex`) lives in ``<db>.ann`` (a JSON
header) and the data files it names. :class:`FollowedIndex` opens it and checks it belongs to
this store and codec (PCA); if it is missing, torn (checksums) or made for another codec, it
rebuilds it from the store in batches (a sample trains it; never every vector at once).
Then it catches up with the store's change feed (rows written since the cursor recorded in
the header; ids no longer indexed are removed), so a search never trusts a stale index.
Writers (``Collection.add``, ``remove``, ``import``) save it after their changes; HNSW
tombstones past a fifth of the index trigger a rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lookalike.ann_index import AnnIndex, SearchSettings

from lookalike import config
from lookalike.interfaces import IdFilter, VectorCodec
from lookalike.store import Store
from lookalike.types import IndexCapabilities
from lookalike.vector_index import ExactIndex

log = logging.getLogger(__name__)

SETTINGS = ("auto", "exact", "ivf", "hnsw")  # ann_index.KINDS (faiss imported when used)
#: Rows read per batch when building or scanning (20,000 x 1280 float32: 100 MB).
BATCH = 20_000


def setting(store: Store) -> str:
    return store.get_meta("index") or "auto"


def set_setting(store: Store, value: str) -> None:
    if value not in SETTINGS:
        raise ValueError(f"unknown index {value!r}; choose one of {', '.join(SETTINGS)}")
    store.set_meta("index", value)


def kind_for(value: str, count: int) -> str:
    """The index a collection of ``count`` images searches with under setting ``value``."""
    if count == 0:
        return "exact"  # nothing to train an approximate index on
    if value == "auto":
        return config.ANN_KIND if count >= config.ANN_MIN_IMAGES else "exact"
    return value


def path_for(store: Store) -> Path:
    return store.path.with_name(store.path.name + ".ann")


def search_settings() -> SearchSettings:
    from lookalike.ann_index import SearchSettings

    return SearchSettings(nprobe=config.ANN_NPROBE, ef_search=config.ANN_EF_SEARCH)


class FollowedIndex:
    """An approximate index kept in step with a store (see the module docstring)."""

    def __init__(self, store: Store, kind: str, codec: VectorCodec | None, codec_key: str) -> None:
        self.store = store
        self.kind = kind
        self.codec = codec
        self.codec_key = codec_key
        self.path = path_for(store)
        self.index: AnnIndex | None = None
        self.generation = -1
        self.cursor: Any = None  # the store's change cursor the index is current to
        self.saved_generation = -2
        self.build_seconds: float | None = None  # of the last rebuild in this process
        self._lock = threading.RLock()

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return self.codec.transform(vectors) if self.codec is not None else vectors

    def current(self) -> AnnIndex:
        """The index, loaded or built on first use, caught up with the store. Thread-safe:
        the service's query workers call it at once; one of them loads or follows."""
        with self._lock:
            if self.index is None and not self._load():
                self.rebuild()
            if self.store.generation() != self.generation:
                self._follow()
            assert self.index is not None
            return self.index

    def _load(self) -> bool:
        from lookalike import ann_index

        loaded = ann_index.load(self.path, settings=search_settings())
        if loaded is None:
            return False
        index, header = loaded
        expected = {"kind": self.kind, "codec": self.codec_key, "store": _store_id(self.store)}
        mismatch = {k: header.get(k) for k, v in expected.items() if header.get(k) != v}
        if mismatch:
            log.info("%s was built for %s, not %s: rebuilding", self.path, mismatch, expected)
            return False
        self.index, self.generation, self.cursor = index, header["generation"], header["cursor"]
        self.saved_generation = self.generation
        return True

    def rebuild(self) -> None:
        """Build the index from the store: train on a sample, then add every row in batches."""
        from lookalike.ann_index import AnnIndex

        started = time.perf_counter()
        generation, cursor = self.store.generation(), self.store.cursor()
        count = self.store.count()
        log.info("building a %s index of %d images", self.kind, count)
        index = AnnIndex.train(
            self.kind, self._training_sample(), count, settings=search_settings()
        )
        for ids, vectors in self.store.vector_batches(BATCH):
            index.add(ids, self.encode(vectors))
        self.index, self.generation, self.cursor = index, generation, cursor
        self.build_seconds = time.perf_counter() - started
        if self.store.generation() != generation:  # written to while building
            self._follow()
        self.save()

    def _training_sample(self) -> np.ndarray:
        """Encoded vectors of a random sample, fetched a batch at a time."""
        from lookalike import ann_index

        ids = self.store.ids()
        size = ann_index.training_size(len(ids))
        if len(ids) > size:
            ids = np.sort(np.random.default_rng(0).choice(ids, size, replace=False))
        parts = [
            self.encode(self.store.vectors_of(ids[start : start + BATCH]))
            for start in range(0, len(ids), BATCH)
        ]
        return np.concatenate(parts) if parts else np.empty((0, self._dims()), np.float32)

    def _dims(self) -> int:
        return self.codec.dims if self.codec is not None else 0

    def _follow(self) -> None:
        """Apply the rows written and the images removed since the cursor."""
        assert self.index is not None
        generation = self.store.generation()
        behind = self.store.count() - len(self.index)
        if behind > max(BATCH, len(self.index) // 2):  # a big import: rebuild in batches
            self.rebuild()
            return
        changes = self.store.vectors_since(self.cursor)
        gone = np.setdiff1d(self.index.ids, changes.all_ids, assume_unique=True)
        if len(gone):
            self.index.remove(gone)
        if changes.vectors is not None:
            self.index.add(changes.ids, self.encode(changes.vectors))
        self.generation, self.cursor = generation, changes.latest
        if self.index.needs_rebuild:
            log.info("%s: many removed images, rebuilding", self.path)
            self.rebuild()

    def save(self) -> None:
        """Write the index and the cursor it is current to (a no-op when already saved)."""
        if self.index is None or self.saved_generation == self.generation:
            return
        self.index.save(
            self.path,
            {
                "codec": self.codec_key,
                "store": _store_id(self.store),
                "generation": self.generation,
                "cursor": self.cursor,
                "built_seconds": self.build_seconds,
            },
        )
        self.saved_generation = self.generation

    def describe(self) -> dict[str, Any]:
        """What ``lookalike info`` shows of the index."""
        index = self.current()
        files = [self.path, *(self.path.with_name(n) for n in _data_files(self.path))]
        size = sum(f.stat().st_size for f in files if f.exists())
        return {
            "kind": self.kind,
            "dims": index.dims,
            "images": len(index),
            "file": str(self.path),
            "bytes": size,
            "bytes_per_image": round(size / max(len(index), 1), 1),
        }


def remove_index_files(path: Path) -> None:
    """Delete a saved index (when the collection goes back to exact search)."""
    from lookalike import ann_index

    ann_index.remove_files(path)


def _data_files(path: Path) -> list[str]:
    import json

    try:
        header = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [header[k] for k in ("index_file", "ids_file") if k in header]


def _store_id(store: Store) -> str:
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

    def __init__(self, store: Store, codec: VectorCodec | None) -> None:
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
    store: Store,
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
    for ids, vectors in store.vector_batches(BATCH):
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
