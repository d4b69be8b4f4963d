"""The store's contract: everything a collection keeps durably.

A new store plugs in by implementing all of :class:`MetadataStore` (nothing above the store
asks for a method it does not name) and a line in :mod:`lookalike.store.registry`;
``tests/test_store_contract.py`` runs every method on each store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from lookalike.index.base import VectorCodec, VectorIndex

if TYPE_CHECKING:
    from lookalike.store.records import (
        EmbeddedImage,
        FileState,
        ImageRecord,
        SkippedFile,
        VectorChanges,
    )


@runtime_checkable
class DatabaseIndex(VectorIndex, Protocol):
    """A :class:`~lookalike.index.base.VectorIndex` that searches in a store's database, and
    the codec of the vectors it searches: queries go through it (the snapshot that holds the
    index holds this codec)."""

    @property
    def codec(self) -> VectorCodec: ...


@runtime_checkable
class MetadataStore(Protocol):
    """The collection's durable state: files, raw vectors, labels, clusters, fitted models.

    Every write is atomic (one transaction). ``vectors_since`` is the change feed that
    indexes follow: its cursor is opaque (pass back ``VectorChanges.latest``; None reads
    everything) and comes from a monotonic sequence, never the wall clock. ``generation``
    changes whenever the set of vectors changes (a cheap "anything new?" check).
    Reads may run on any thread concurrently with one writer.

    Whole-collection jobs (building an approximate index, fitting PCA, clustering, the exact
    scan of ``search --exact``) read through ``ids``, ``vector_batches``, ``vectors_of`` and
    ``sample_vectors``, so that no job holds every vector of a large collection at once.
    """

    # metadata, fitted models
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def get_artifact(self, name: str) -> bytes | None: ...
    def put_artifact(self, name: str, data: bytes | None) -> None: ...
    def generation(self) -> int: ...

    # files and vectors
    def file_states(self, under: str | None = None) -> dict[str, FileState]: ...
    def write_batch(
        self,
        embedded: Iterable[EmbeddedImage],
        skipped: Iterable[SkippedFile],
        forget: Iterable[str] = (),
    ) -> None: ...
    def remove(self, paths: Iterable[str]) -> int: ...
    def bulk_load(self, rows: int, /) -> AbstractContextManager[None]:
        """Around a run of writes that adds about ``rows`` rows (an import, an index run): a
        store may defer the upkeep of its search index to the end of a large load (building
        it once over every row instead of row by row) as long as searches meanwhile still
        give correct answers. The run's writes are committed batch by batch as usual."""
        ...

    def skipped_files(self) -> list[SkippedFile]: ...
    def count(self) -> int: ...
    def load_vectors(self) -> tuple[np.ndarray, np.ndarray]: ...
    def ids(self) -> np.ndarray:
        """Every indexed id, int64 ascending (no vector is read)."""
        ...

    def vector_batches(self, batch_size: int = ..., /) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (ids, vectors) in id order, ``batch_size`` rows at a time."""
        ...

    def vectors_of(self, ids: np.ndarray, /) -> np.ndarray:
        """Raw vectors (float32) of these ids, in the order given; KeyError if one is not
        indexed; (0, 0) for none."""
        ...

    def vectors_present(self, ids: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]:
        """The ids of these still indexed (in their order) and their raw vectors: ids read
        before an image was removed (by another thread or process) are left out."""
        ...

    def sample_vectors(self, size: int, /, *, seed: int = 0) -> np.ndarray:
        """Vectors of up to ``size`` images drawn at random (ids ascending): every vector
        when the collection has no more than ``size``."""
        ...

    def cursor(self) -> int:
        """The change cursor as of now: ``vectors_since`` of it returns no row until
        something is written."""
        ...

    def vectors_since(self, cursor: int | None, /) -> VectorChanges: ...
    def lookup(self, path: str) -> tuple[int, np.ndarray] | None: ...
    def paths(self, ids: Iterable[int]) -> dict[int, str]: ...
    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]: ...

    # labels and clusters
    def set_labels(self, labels: dict[str, str]) -> int: ...
    def labels_generation(self) -> int: ...
    def labelled_ids(self) -> tuple[np.ndarray, list[str]]: ...
    def category_counts(self) -> dict[str, int]: ...
    def set_clusters(self, clusters: dict[int, int]) -> None: ...
    def cluster_counts(self) -> dict[int, int]: ...

    # searching
    def index_file(self) -> Path | None:
        """Where an approximate index of this collection is kept, beside the store's file
        (:mod:`lookalike.index.persistent`); None: the store keeps none (it searches in its
        database, see :meth:`database_index`)."""
        ...

    def database_index(self) -> DatabaseIndex | None:
        """The index that searches in the store's own database (with the codec its queries
        must go through); None: searches use an index built from the store's vectors."""
        ...

    def reduce(self) -> None:
        """The codec (meta ``pca``, artifact ``pca``) changed: a store that searches in its
        database recomputes the vectors it searches; others have nothing to do."""
        ...

    def close(self) -> None: ...
