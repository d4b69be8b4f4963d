"""Nearest-neighbour search over unit vectors: the exact index, the default
:class:`~lookalike.index.base.VectorIndex`.

Brute-force cosine in NumPy: exact, a few milliseconds for 10^4-10^5 vectors. Immutable from
the outside (``add``/``remove`` return a new index), so that a search snapshot can hold one
while the collection changes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lookalike.index import blas
from lookalike.index.base import IdFilter, VectorIndex
from lookalike.types import IndexCapabilities

CAPABILITIES = IndexCapabilities(
    exact=True, filter=True, reconstruct=True, snapshot=True, persist=True
)
#: Up to this many queries at once, the top-k product runs on one BLAS thread.
FEW_QUERIES = 8


class _Buffer:
    """Rows of a growing index, allocated by doubling. ``used`` says how many rows the
    newest index built on it owns: only that index may write the rows after them, so that
    two indexes grown from the same one never write into each other's rows."""

    def __init__(self, rows: np.ndarray, capacity: int, keep: np.ndarray | None = None) -> None:
        """Copy ``rows`` (only those where ``keep`` is true, if given) into a new buffer."""
        count = len(rows) if keep is None else int(keep.sum())
        self.data = np.empty((max(capacity, count), rows.shape[1]), dtype=np.float32)
        if keep is None:
            self.data[:count] = rows
        else:
            _copy_kept(rows, keep, self.data)
        self.used = count
        self.lock = threading.Lock()


def _copy_kept(rows: np.ndarray, keep: np.ndarray, out: np.ndarray) -> None:
    """``out[:keep.sum()] = rows[keep]`` without a temporary: when a few rows go, the runs of
    rows between them are copied slice by slice (``np.compress`` with ``out`` is ~20x slower,
    boolean indexing copies everything twice)."""
    gone = np.flatnonzero(~keep)
    if len(gone) > 256:
        out[: len(rows) - len(gone)] = rows[keep]
        return
    start = written = 0
    for row in [*gone.tolist(), len(rows)]:
        count = row - start
        out[written : written + count] = rows[start:row]
        written += count
        start = row + 1


class ExactIndex:
    """Exact cosine top-k by one matrix product and a partial sort; ``ids`` ascending."""

    capabilities = CAPABILITIES

    def __init__(
        self, ids: np.ndarray, vectors: np.ndarray, *, _buffer: _Buffer | None = None
    ) -> None:
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        self._ids = np.asarray(ids, dtype=np.int64)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._buffer = _buffer

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    @property
    def dims(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def __len__(self) -> int:
        return len(self._ids)

    # --- changes ---------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> ExactIndex:
        """A new index with these rows in (replacing rows of the same id); ids stay sorted."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return self
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(ids) > 1 and (np.diff(ids) <= 0).any():
            order = np.argsort(ids, kind="stable")
            ids, vectors = ids[order], vectors[order]
        if len(self) == 0 or ids[0] > self._ids[-1]:
            return self._appended(ids, vectors)
        keep = ~np.isin(self._ids, ids)
        all_ids = np.concatenate([self._ids[keep], ids])
        all_vectors = np.concatenate([self.vectors[keep], vectors])
        order = np.argsort(all_ids, kind="stable")
        return ExactIndex(all_ids[order], all_vectors[order])

    def remove(self, ids: np.ndarray) -> ExactIndex:
        """A new index without these ids; its rows are copied once, into a buffer with room
        for the rows added next (no second copy for them)."""
        gone = np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        if not gone.any():
            return self
        keep = ~gone
        left = int(keep.sum())
        buffer = _Buffer(self.vectors, left + max(left // 4, 1024), keep=keep)
        return ExactIndex(self._ids[keep], buffer.data[:left], _buffer=buffer)

    def _appended(self, ids: np.ndarray, vectors: np.ndarray) -> ExactIndex:
        """Rows after every existing one. They go into a buffer grown by doubling, so adding
        a few rows to a large index copies nothing; this index stays valid and unchanged."""
        n, m = len(self), len(ids)
        if n == 0 or self.vectors.shape[1] != vectors.shape[1]:
            fresh = _Buffer(vectors, max(2 * m, 1024))
            return ExactIndex(ids, fresh.data[:m], _buffer=fresh)
        buffer: _Buffer | None = self._buffer
        if buffer is not None:
            with buffer.lock:
                # Rows n.. are ours to write only if no other index grew from this one.
                if buffer.used == n and len(buffer.data) >= n + m:
                    buffer.data[n : n + m] = vectors
                    buffer.used = n + m
                else:
                    buffer = None
        if buffer is None:
            buffer = _Buffer(self.vectors, 2 * (n + m))
            buffer.data[n : n + m] = vectors
            buffer.used = n + m
        return ExactIndex(np.concatenate([self._ids, ids]), buffer.data[: n + m], _buffer=buffer)

    # --- reading ---------------------------------------------------------------------------

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(self._ids, np.asarray(ids, dtype=np.int64))
        rows = np.minimum(rows, max(len(self._ids) - 1, 0))
        if len(self._ids) == 0 or not (self._ids[rows] == ids).all():
            raise KeyError("some ids are not in the index")
        return self.vectors[rows]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filter: IdFilter | None = None,
        exclude: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n_queries = len(queries)
        out_ids = np.full((n_queries, k), -1, dtype=np.int64)
        out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        ids, vectors = self._ids, self.vectors
        if filter is not None:
            rows = np.flatnonzero(np.isin(ids, filter))
            ids, vectors = ids[rows], vectors[rows]
        if len(ids) == 0 or k <= 0:
            return out_scores, out_ids
        # A few queries are bound by memory: one thread is as fast, and none is left spinning
        # on the cores the next query's model needs. Many (eval) are arithmetic: all cores.
        few = blas.one_thread() if n_queries <= FEW_QUERIES else contextlib.nullcontext()
        with few:
            scores = queries @ vectors.T
        if exclude is not None:
            positions = np.searchsorted(ids, [-1 if e is None else e for e in exclude])
            for row, (pos, excluded) in enumerate(zip(positions, exclude, strict=True)):
                if excluded is not None and pos < len(ids) and ids[pos] == excluded:
                    scores[row, pos] = -np.inf
        take = min(k, len(ids))
        if take < len(ids):
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            top = np.broadcast_to(np.arange(take), (n_queries, take))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out_scores[:, :take] = np.take_along_axis(top_scores, order, axis=1)
        out_ids[:, :take] = ids[top]
        out_ids[~np.isfinite(out_scores)] = -1
        return out_scores, out_ids

    # --- persistence -----------------------------------------------------------------------

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, ids=self._ids, vectors=self.vectors)


def load_index(path: Path) -> VectorIndex:
    """Read an index written by ``save``."""
    with np.load(path, allow_pickle=False) as arrays:
        return ExactIndex(arrays["ids"], arrays["vectors"])
