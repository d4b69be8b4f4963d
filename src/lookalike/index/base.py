"""The index's contracts: a codec (raw vectors -> index vectors) and a vector index.

A new index plugs in by implementing :class:`VectorIndex` and a line in
:mod:`lookalike.index.registry`; a new codec by implementing :class:`VectorCodec` and a line
in :mod:`lookalike.index.codec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from lookalike.types import IndexCapabilities

#: Ids the index may return for a query (sorted ascending, int64); None: every id.
IdFilter = np.ndarray


@runtime_checkable
class VectorCodec(Protocol):
    """Raw encoder vectors -> index vectors (fitted on the collection, stored with it).

    ``transform`` must be deterministic: the collection's vectors and every query go through
    the same codec object, held together with the index in one search snapshot, so they
    always agree. The store keeps the raw vectors; a codec can be refitted at any time.
    """

    @property
    def dims(self) -> int:
        """Dimensions of the transformed vectors (0: same as the input)."""
        ...

    @property
    def stored_dims(self) -> int:
        """Dimensions of the vectors it writes (the input's when it keeps them all, as
        centring does); 0 for the identity, whose output is the raw vectors themselves."""
        ...

    @property
    def fitted_on(self) -> int | None:
        """How many images the collection held when it was fitted (staleness is measured
        against it); None: nothing fitted, never stale."""
        ...

    def counted(self, images: int) -> VectorCodec:
        """The same codec, counted as fitted on a collection of ``images`` (it was fitted on a
        sample of them)."""
        ...

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) raw unit vectors -> (N, d) vectors for the index (unit length for cosine)."""
        ...

    def direction(self, linear: np.ndarray) -> np.ndarray:
        """(N, D) linear scores on raw vectors (rows ``w`` scoring ``w . x``) -> (N, d) unit
        query vectors whose cosine with a transformed vector ranks the images as ``w`` does
        on what the codec keeps of them (search by words, :mod:`lookalike.search.words`)."""
        ...

    def to_bytes(self) -> bytes: ...


class IdentityCodec:
    """The codec of an uncompressed collection: vectors pass through unchanged."""

    dims = 0
    stored_dims = 0
    fitted_on = None

    def counted(self, images: int) -> IdentityCodec:
        return self

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return np.atleast_2d(np.asarray(vectors, dtype=np.float32))

    def direction(self, linear: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(linear, dtype=np.float32))
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    def to_bytes(self) -> bytes:
        return b""


@runtime_checkable
class VectorIndex(Protocol):
    """Nearest neighbours by inner product (cosine on unit vectors), FAISS-style.

    ``add``/``remove`` return the updated index. With ``capabilities.snapshot`` the index they
    were called on stays as it was (searches running on it are not disturbed); otherwise it
    may change in place and returns itself, and must stay safe to search meanwhile.
    """

    @property
    def capabilities(self) -> IndexCapabilities: ...

    @property
    def ids(self) -> np.ndarray:
        """Every id in the index, int64 ascending."""
        ...

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        """Insert rows, replacing rows of the same id."""
        ...

    def remove(self, ids: np.ndarray) -> VectorIndex:
        """Drop rows by id (unknown ids are ignored)."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filter: IdFilter | None = None,
        exclude: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each (n_queries, k), best first.

        ``filter``: only these ids (sorted int64) may be returned. ``exclude[i]``: an id left
        out of query ``i``'s results (the query image itself in "more like this"). Rows
        shorter than ``k`` are padded with score -inf and id -1.
        """
        ...

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored index vectors of these ids (needs ``capabilities.reconstruct``)."""
        ...

    def save(self, path: Path) -> None:
        """Write the index to ``path`` (needs ``capabilities.persist``)."""
        ...
