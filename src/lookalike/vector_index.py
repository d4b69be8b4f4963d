"""Nearest-neighbour search over unit vectors: the replaceable part behind ``search``.

``VectorIndex`` is the contract; ``ExactIndex`` is the default (brute-force cosine in NumPy,
exact, a few milliseconds for 10^4-10^5 vectors). An approximate index (HNSW) or a database
backend (pgvector) can take its place without touching the rest.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    def __len__(self) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, exclude: list[int | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ids and cosine scores per query row, best first.

        ``exclude[i]``, if given, is an id left out of query ``i``'s results (the query
        image itself when searching "more like this"). Rows shorter than ``k`` (a small
        collection) are padded with id -1 and score -inf.
        """
        ...


class ExactIndex:
    """Exact cosine top-k by one matrix product and a partial sort; ``ids`` ascending."""

    def __init__(
        self, ids: np.ndarray, vectors: np.ndarray, *, _storage: np.ndarray | None = None
    ) -> None:
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        # Rows beyond len(self) that appended() may fill without copying the others.
        self._storage = _storage

    def appended(self, ids: np.ndarray, vectors: np.ndarray) -> ExactIndex:
        """A new index with these rows added after the existing ones (``ids`` ascending and
        above every existing id). The rows live in a buffer grown by doubling, so adding a
        few rows to a large index copies nothing; this index stays valid and unchanged
        (searches running on it are not disturbed)."""
        n, m = len(self), len(ids)
        if m == 0:
            return self
        if n and ids[0] <= self.ids[-1]:
            raise ValueError("appended ids must follow the existing ones")
        storage = self._storage
        if (
            storage is None
            or len(storage) < n + m
            or storage.shape[1] != vectors.shape[1]
            or not np.shares_memory(storage, self.vectors)
        ):
            storage = np.empty((max(2 * (n + m), 1024), vectors.shape[1]), dtype=np.float32)
            storage[:n] = self.vectors
        storage[n : n + m] = vectors
        return ExactIndex(np.concatenate([self.ids, ids]), storage[: n + m], _storage=storage)

    def __len__(self) -> int:
        return len(self.ids)

    def search(
        self, queries: np.ndarray, k: int, exclude: list[int | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n_queries = len(queries)
        out_ids = np.full((n_queries, k), -1, dtype=np.int64)
        out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        if len(self.ids) == 0 or k <= 0:
            return out_ids, out_scores
        scores = queries @ self.vectors.T
        if exclude is not None:
            positions = np.searchsorted(self.ids, [-1 if e is None else e for e in exclude])
            for row, (pos, excluded) in enumerate(zip(positions, exclude, strict=True)):
                if excluded is not None and pos < len(self.ids) and self.ids[pos] == excluded:
                    scores[row, pos] = -np.inf
        take = min(k, len(self.ids))
        if take < len(self.ids):
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            top = np.broadcast_to(np.arange(take), (n_queries, take))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out_scores[:, :take] = np.take_along_axis(top_scores, order, axis=1)
        out_ids[:, :take] = self.ids[top]
        excluded_rows = ~np.isfinite(out_scores)
        out_ids[excluded_rows] = -1
        return out_ids, out_scores
