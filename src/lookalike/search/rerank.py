"""Re-ranking for collections of categories: database-side augmentation + alpha query expansion.

For collections of categories. Each indexed vector is replaced by a weighted sum of itself
and its nearest neighbours (database-side augmentation, DBA), and each query by a weighted
sum of itself and its top results in the augmented collection (alpha query expansion,
alpha-QE; Radenovic et al., 2018). The weights are the cosine raised to the power ``alpha``,
so near copies count most. Both pull vectors towards the dense middle of their category:
category retrieval improves, while the score of one exact item against its copy is diluted.
So the search path keeps the plain search's best match first (:func:`keep_plain_top`) and
lets re-ranking order the rest: top-1 is the plain search's, never moved off the top by
expansion (see docs/EVALUATION.md).

The neighbour pass asks the vector index (any :class:`lookalike.index.base.VectorIndex`,
exact or approximate) for each vector's top ``k``: one batched search, never an N x N matrix
in memory. :class:`AugmentedVectors` holds the result for one search snapshot (built on the
first re-ranked search of that snapshot): an exact index searches all augmented vectors;
an approximate one keeps its speed by re-scoring a candidate pool from the normal index
(:data:`lookalike.config.RERANK_POOL`), O(pool) per query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lookalike import config
from lookalike.encode.models import normalize
from lookalike.errors import Unavailable
from lookalike.index.base import IdFilter, VectorIndex
from lookalike.index.exact import ExactIndex
from lookalike.index.refine import RefinedIndex, pool_size

log = logging.getLogger(__name__)

#: Candidate vectors' elements scored at once by the neighbour pass of a refined index
#: (16 Mi float32: 64 MiB).
SCORED_ELEMENTS = 16 * 1024 * 1024


def exact_neighbours(
    vectors: np.ndarray, k: int = config.RERANK_DBA_K
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and cosines of each row's ``k`` nearest other rows, by an exact index."""
    return neighbours(ExactIndex(np.arange(len(vectors)), vectors), vectors, k)


def neighbours(
    index: VectorIndex,
    vectors: np.ndarray,
    k: int = config.RERANK_DBA_K,
    *,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's ``k`` nearest other indexed items, as index ids, with their cosines.

    ``ids`` (the vectors' own ids in the index, default 0..N-1) are left out of their own
    results."""
    own = np.arange(len(vectors)) if ids is None else ids
    found_ids, found_scores = [], []
    for start in range(0, len(vectors), config.RERANK_BATCH):
        chunk = slice(start, start + config.RERANK_BATCH)
        got_scores, got_ids = index.search(vectors[chunk], k, exclude=[int(i) for i in own[chunk]])
        found_ids.append(got_ids)
        found_scores.append(got_scores)
    if not found_ids:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate(found_ids), np.concatenate(found_scores)


def codes_of(index: VectorIndex) -> VectorIndex:
    """What re-ranking searches for candidates it scores itself: an approximate index's
    compressed codes alone (its refine step would read a pool of stored vectors a query, where
    re-ranking holds every vector), any other index as it is."""
    return index.approximate if isinstance(index, RefinedIndex) else index


def held_neighbours(
    index: VectorIndex, ids: np.ndarray, vectors: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other items of ``index`` (ids, best first, -1 padding) of the rows
    ``rows`` of ``vectors`` (held, aligned with ``ids``), with their cosines. An approximate
    index with a refine step is refined here with the held vectors, not the store's: its
    codes give a pool of :func:`lookalike.index.refine.pool_size` candidates, scored with
    ``vectors`` (a candidate not among ``ids``, added since they were read, is left out)."""
    searched = codes_of(index)
    if searched is index:
        return neighbours(index, vectors[rows], k, ids=ids[rows])
    pool = pool_size(k)
    found, _ = neighbours(searched, vectors[rows], pool, ids=ids[rows])
    out_ids = np.full((len(rows), k), -1, dtype=np.int64)
    out_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    step = max(1, SCORED_ELEMENTS // (pool * max(vectors.shape[1], 1)))
    for start in range(0, len(rows), step):
        part = slice(start, start + step)
        where = rows_of(ids, found[part])
        scores = np.einsum("ij,ikj->ik", vectors[rows[part]], vectors[np.maximum(where, 0)])
        scores = np.where(where >= 0, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(scores, order, axis=1)
        out_scores[part, : order.shape[1]] = best
        out_ids[part, : order.shape[1]] = np.where(
            np.isfinite(best), np.take_along_axis(found[part], order, axis=1), -1
        )
    return out_ids, out_scores


def weighted_sum(
    vectors: np.ndarray, others: np.ndarray, scores: np.ndarray, alpha: float = config.RERANK_ALPHA
) -> np.ndarray:
    """Each row of ``vectors`` (weight 1) plus its ``others`` (N, k, D) weighted by
    max(score, 0) ** alpha, renormalised. Missing neighbours have score -inf (weight 0)."""
    weights = np.power(np.maximum(np.nan_to_num(scores, neginf=0.0), 0.0), alpha)
    return normalize(vectors + (weights[:, :, None] * others).sum(axis=1))


def augment_database(
    vectors: np.ndarray,
    found: tuple[np.ndarray, np.ndarray],
    alpha: float = config.RERANK_ALPHA,
    *,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Database-side augmentation: ``found`` are the rows and cosines of each row's
    neighbours (rows -1 when missing); with ``rows``, only those rows of ``vectors`` are
    augmented (``found`` has one line per row). Done a batch at a time (the neighbours'
    vectors of every row at once would take k times the collection's memory)."""
    neighbour_rows, scores = found
    scores = np.where(neighbour_rows >= 0, scores, -np.inf)
    targets = np.arange(len(vectors)) if rows is None else rows
    out = np.empty((len(targets), vectors.shape[1] if vectors.ndim == 2 else 0), np.float32)
    for start in range(0, len(targets), config.RERANK_BATCH):
        part = slice(start, start + config.RERANK_BATCH)
        others = vectors[np.maximum(neighbour_rows[part], 0)]
        out[part] = weighted_sum(vectors[targets[part]], others, scores[part], alpha)
    return out


def expand_queries(
    queries: np.ndarray,
    database: np.ndarray,
    k: int = config.RERANK_QE_K,
    alpha: float = config.RERANK_ALPHA,
) -> np.ndarray:
    """Alpha query expansion of each query with its top ``k`` rows of ``database``."""
    scores, rows = ExactIndex(np.arange(len(database)), database).search(queries, k)
    scores = np.where(rows >= 0, scores, -np.inf)
    return weighted_sum(queries, database[np.maximum(rows, 0)], scores, alpha)


def stored_vectors(index: VectorIndex) -> tuple[np.ndarray, np.ndarray]:
    """Ids and index-space vectors of every row of ``index``, read a batch at a time. Rows
    removed meanwhile (an approximate index changes in place) are left out."""
    if isinstance(index, ExactIndex):
        return index.ids, index.vectors
    if not index.capabilities.reconstruct:
        raise Unavailable(
            "re-ranking needs an index that returns stored vectors (exact or hnsw; "
            "`lookalike index --index hnsw`)"
        )
    ids = np.asarray(index.ids, dtype=np.int64)
    kept, parts = [], []
    for start in range(0, len(ids), 20 * config.RERANK_BATCH):
        chunk = ids[start : start + 20 * config.RERANK_BATCH]
        try:
            parts.append(index.vectors_of(chunk))
        except KeyError:  # removed since ids were read
            chunk = chunk[np.isin(chunk, index.ids)]
            parts.append(index.vectors_of(chunk))
        kept.append(chunk)
    if not parts:
        return ids, np.zeros((0, 0), np.float32)
    return np.concatenate(kept), np.concatenate(parts).astype(np.float32, copy=False)


def fingerprints(vectors: np.ndarray) -> np.ndarray:
    """One float64 per row that changes when the row does (a fixed random projection)."""
    if vectors.ndim != 2 or not len(vectors):
        return np.zeros(len(vectors), dtype=np.float64)
    projection = np.random.default_rng(0).normal(size=vectors.shape[1])
    step = 20 * config.RERANK_BATCH
    parts = [
        vectors[i : i + step].astype(np.float64) @ projection for i in range(0, len(vectors), step)
    ]
    return np.concatenate(parts)


def rows_of(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions of ``wanted`` in the sorted ``ids`` (-1 where absent or negative)."""
    if len(ids) == 0:
        return np.full(np.shape(wanted), -1, dtype=np.int64)
    positions = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return np.where((ids[positions] == wanted) & (wanted >= 0), positions, -1)


@dataclass(frozen=True)
class AugmentedVectors:
    """The database-side augmented vectors of one index, rows aligned with ``ids``
    (ascending). Built once per search snapshot (:meth:`build`), never changed."""

    ids: np.ndarray
    vectors: np.ndarray
    #: Whether the index they come from is exact (then every augmented vector is searched;
    #: otherwise a candidate pool of that index is re-scored).
    exact: bool
    seconds: float
    #: Each row's neighbours (ids, -1 when missing) and cosines, and a fingerprint of the
    #: index vector of each row (how :meth:`follow` tells a replaced vector).
    neighbour_ids: np.ndarray
    neighbour_scores: np.ndarray
    fingerprints: np.ndarray
    #: Rows whose neighbours were searched for (all when built, the changed when followed).
    searched: int

    @classmethod
    def build(
        cls, index: VectorIndex, k: int = config.RERANK_DBA_K, alpha: float = config.RERANK_ALPHA
    ) -> AugmentedVectors:
        """Each row plus its ``k`` nearest neighbours, found by one batched search of
        ``index`` itself (approximate at scale: no N x N comparison)."""
        started = time.perf_counter()
        ids, vectors = stored_vectors(index)
        found, scores = held_neighbours(index, ids, vectors, np.arange(len(ids)), k)
        rows = rows_of(ids, found)  # a neighbour added after ``ids`` were read: left out
        found = np.where(rows >= 0, found, -1)
        augmented = augment_database(vectors, (rows, scores), alpha)
        return cls._made(index, ids, augmented, found, scores, vectors, started, len(ids))

    @classmethod
    def _made(
        cls,
        index: VectorIndex,
        ids: np.ndarray,
        augmented: np.ndarray,
        found: np.ndarray,
        scores: np.ndarray,
        vectors: np.ndarray,
        started: float,
        searched: int,
    ) -> AugmentedVectors:
        seconds = time.perf_counter() - started
        log.info(
            "re-ranking: augmented %d vectors (%d-d, %.1f MB; neighbours searched for %d) "
            "in %.2f s",
            len(ids),
            augmented.shape[1] if augmented.ndim == 2 else 0,
            augmented.nbytes / 1e6,
            searched,
            seconds,
        )
        exact = bool(index.capabilities.exact)
        prints = fingerprints(vectors)
        return cls(ids, augmented, exact, seconds, found, scores, prints, searched)

    def follow(
        self, index: VectorIndex, k: int = config.RERANK_DBA_K, alpha: float = config.RERANK_ALPHA
    ) -> AugmentedVectors:
        """The augmented vectors of ``index``, an exact index grown or shrunk from the one
        these were built from (a later snapshot): only rows whose neighbours may have changed
        are searched again (new rows; rows whose neighbour went or changed; rows that a new
        row is nearer to than their k-th neighbour), the others are kept."""
        started = time.perf_counter()
        ids, vectors = stored_vectors(index)
        old = rows_of(self.ids, ids)
        kept = old >= 0
        if self.vectors.shape[1:] != vectors.shape[1:]:
            kept[:] = False
        else:  # an id whose vector was replaced counts as new
            kept[kept] = self.fingerprints[old[kept]] == fingerprints(vectors)[kept]
        changed = np.union1d(np.setdiff1d(self.ids, ids), ids[~kept & (old >= 0)])
        redo = ~kept
        previous = old[kept]
        redo[kept] = np.isin(self.neighbour_ids[previous], changed).any(axis=1)
        new_rows = np.flatnonzero(~kept)
        if len(new_rows):
            kept_rows = np.flatnonzero(kept)
            kth = self.neighbour_scores[previous, -1] if k else np.zeros(len(kept_rows))
            for start in range(0, len(kept_rows), config.RERANK_BATCH):
                chunk = kept_rows[start : start + config.RERANK_BATCH]
                nearest = (vectors[chunk] @ vectors[new_rows].T).max(axis=1)
                redo[chunk] |= nearest > kth[start : start + config.RERANK_BATCH]
        found = np.full((len(ids), k), -1, dtype=np.int64)
        scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
        found[kept], scores[kept] = self.neighbour_ids[previous], self.neighbour_scores[previous]
        augmented = np.empty_like(vectors)
        augmented[kept] = self.vectors[previous]
        todo = np.flatnonzero(redo)
        if len(todo):
            got, got_scores = held_neighbours(index, ids, vectors, todo, k)
            found[todo], scores[todo] = got, got_scores
            rows = rows_of(ids, got)
            augmented[todo] = augment_database(vectors, (rows, got_scores), alpha, rows=todo)
        return self._made(index, ids, augmented, found, scores, vectors, started, len(todo))

    def search(
        self,
        index: VectorIndex,
        queries: np.ndarray,
        k: int,
        *,
        filters: Sequence[IdFilter | None],
        exclude: Sequence[int | None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of the top ``k`` by alpha-QE query against augmented vectors.
        ``filters[i]``: the ids query ``i`` may return (None: all); ``index`` is the one
        these vectors were built from (it gives the candidate pool when approximate)."""
        queries = np.atleast_2d(queries)
        if self.exact and all(f is None for f in filters):
            return _expanded_search(ExactIndex(self.ids, self.vectors), queries, k, exclude)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        for i, query in enumerate(queries):
            pool = self._candidates(index, query, k, filters[i], exclude[i])
            if pool is not None:
                scores, ids = _expanded_search(pool, query[None], k, exclude[i : i + 1])
                out_scores[i], out_ids[i] = scores[0], ids[0]
        return out_scores, out_ids

    def _candidates(
        self,
        index: VectorIndex,
        query: np.ndarray,
        k: int,
        allowed: IdFilter | None,
        excluded: int | None,
    ) -> ExactIndex | None:
        """The augmented vectors a query is ranked among: all (or the ``allowed`` ones) for
        an exact index, else those of a candidate pool of ``index``."""
        if self.exact:
            keep = np.isin(self.ids, allowed) if allowed is not None else None
        else:
            _, found = codes_of(index).search(  # the pool is scored on augmented vectors
                query[None],
                max(config.RERANK_POOL, config.RERANK_POOL_PER_RESULT * k),
                filter=allowed,
                exclude=[excluded],
            )
            rows = rows_of(self.ids, found[0])
            keep = np.zeros(len(self.ids), dtype=bool)
            keep[rows[rows >= 0]] = True  # ids of another snapshot are left out
        if keep is None:
            return ExactIndex(self.ids, self.vectors)
        if not keep.any():
            return None
        return ExactIndex(self.ids[keep], self.vectors[keep])


def _expanded_search(
    pool: ExactIndex, queries: np.ndarray, k: int, exclude: Sequence[int | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Alpha query expansion of each query with its top
    :data:`lookalike.config.RERANK_QE_K` in ``pool``, then the expanded queries' top ``k`` in
    ``pool``."""
    scores, ids = pool.search(queries, config.RERANK_QE_K, exclude=exclude)
    others = pool.vectors[np.maximum(rows_of(pool.ids, ids), 0)]
    expanded = weighted_sum(queries, others, scores, config.RERANK_ALPHA)
    return pool.search(expanded, k, exclude=exclude)


def keep_plain_top(
    plain: tuple[np.ndarray, np.ndarray],
    reranked_ids: np.ndarray,
    *,
    keep: int = config.RERANK_KEEP_TOP,
    near: float = config.RERANK_NEAR_TOP,
) -> np.ndarray:
    """Re-ranked ``ids`` rows with the plain search's best match first: ``plain`` is the
    ``(scores, ids)`` of the plain search (best first, at least its top ``keep``); its best
    match, and those of its next ``keep - 1`` results that score within ``near`` of it, go
    first in their plain order, then the re-ranked results without them (same width).

    Why: expansion pulls a query towards the middle of its category, which is what a
    category search wants and what costs an instance search its one match (a near copy, a
    photo of the item): the plain search's top, and the results as good as it, are the
    confident instance candidates, so re-ranking only orders what comes after them. Top-1
    is then the plain search's, on every query (docs/EVALUATION.md, re-ranking)."""
    scores, ids = plain
    out = np.full_like(reranked_ids, -1)
    width = reranked_ids.shape[1]
    for row, (row_scores, row_ids) in enumerate(zip(scores, ids, strict=True)):
        first = [
            int(i)
            for j, (i, s) in enumerate(zip(row_ids[:keep], row_scores[:keep], strict=True))
            if i >= 0 and (j == 0 or s >= row_scores[0] - near)
        ]
        rest = [int(i) for i in reranked_ids[row] if i >= 0 and int(i) not in first]
        merged = (first + rest)[:width]
        out[row, : len(merged)] = merged
    return out
