"""Re-scoring an approximate index's candidates with the store's full vectors (a refine step).

The approximate index (:class:`lookalike.index.ann.AnnIndex`) ranks compressed vectors (8-bit
codes of the codec's output): close enough to find the neighbourhood of a query, too coarse
to order a dense family of near-variants whose scores differ in the third decimal. So a
search asks it for a candidate pool larger than ``k`` (:func:`pool_size`), reads those
candidates' full vectors from the store, puts them through the same codec as every query,
and cuts the top ``k`` by their exact cosines: FAISS's ``IndexRefine``, ScaNN's reorder.

An image's score is then the one an exact scan of the store (``search --exact``,
:func:`lookalike.index.persistent.exact_search`) gives it, and ``vectors_of`` returns the same
full-precision vectors, so query expansion and the scores of re-ordered results
(:func:`lookalike.search.engine.common_scores`) mean the same thing too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike import config
from lookalike.index import blas
from lookalike.index.base import IdentityCodec, IdFilter, VectorCodec
from lookalike.index.exact import FEW_QUERIES
from lookalike.store.base import MetadataStore
from lookalike.types import IndexCapabilities

if TYPE_CHECKING:
    from lookalike.index.ann import AnnIndex


def pool_size(k: int) -> int:
    """Candidates the approximate index returns for a top ``k`` (see
    :data:`lookalike.config.ANN_REFINE_POOL`)."""
    return max(config.ANN_REFINE_POOL, config.ANN_REFINE_PER_RESULT * k)


def rescore(
    queries: np.ndarray,
    candidates: np.ndarray,
    candidate_ids: np.ndarray,
    candidate_vectors: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` (n_queries, ``k``), best first: each query's ``candidates`` (ids, -1
    padding) scored by the cosine with their vectors, rows of ``candidate_vectors`` aligned
    with the ascending ``candidate_ids``. A candidate missing from ``candidate_ids`` (removed
    since it was found) is left out; rows shorter than ``k`` are padded with -inf / -1."""
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    if not len(candidate_ids):
        return out_scores, out_ids
    for row, found in enumerate(candidates):
        found = found[found >= 0]
        rows = np.minimum(np.searchsorted(candidate_ids, found), len(candidate_ids) - 1)
        present = candidate_ids[rows] == found
        found, rows = found[present], rows[present]
        scores = candidate_vectors[rows] @ queries[row]
        order = np.argsort(-scores, kind="stable")[:k]
        out_scores[row, : len(order)] = scores[order]
        out_ids[row, : len(order)] = found[order]
    return out_scores, out_ids


class RefinedIndex:
    """An approximate index whose candidates are re-scored with the store's full vectors
    (see the module docstring): what a search snapshot of a large collection holds.

    It changes as the approximate index and the store do (both are followed in place), so it
    is never copied per snapshot; ``approximate`` is the FAISS index itself, for passes that
    re-score on their own (near-duplicates)."""

    def __init__(
        self,
        approximate: AnnIndex,
        store: MetadataStore,
        codec: VectorCodec | None = None,
        *,
        pool: int | None = None,
    ) -> None:
        self.approximate = approximate
        self.store = store
        self.codec: VectorCodec = codec if codec is not None else IdentityCodec()
        #: Candidates asked of the approximate index (None: :func:`pool_size` of ``k``).
        self.pool = pool

    @property
    def capabilities(self) -> IndexCapabilities:
        return IndexCapabilities(
            exact=False, filter=True, reconstruct=True, snapshot=False, persist=False
        )

    @property
    def ids(self) -> np.ndarray:
        return self.approximate.ids

    @property
    def dims(self) -> int:
        return self.approximate.dims

    def __len__(self) -> int:
        return len(self.approximate)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> RefinedIndex:
        raise TypeError("the approximate index follows the store: write to the store")

    def remove(self, ids: np.ndarray) -> RefinedIndex:
        raise TypeError("the approximate index follows the store: write to the store")

    def save(self, path: Path) -> None:
        raise TypeError("the approximate index is saved beside the store by its follower")

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The codec's transform of the stored vectors of these ids, in their order. An image
        removed from the store since the index last followed it (it changes in place) has no
        vector any more: zeros, a cosine of 0 with anything (its record is gone too, so no
        result shows it). KeyError for an id the index does not hold."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.dims), dtype=np.float32)
        if not len(ids):
            return out
        if not self.approximate.holds(ids).all():
            raise KeyError("some ids are not in the index")
        present, raw = self.store.vectors_present(ids)
        if len(present):
            out[np.isin(ids, present)] = self.codec.transform(raw)
        return out

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filter: IdFilter | None = None,
        exclude: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The approximate index's top :func:`pool_size` candidates, re-scored with the
        stored vectors, top ``k`` of them (see
        :meth:`lookalike.index.base.VectorIndex.search`)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        pool = max(self.pool or pool_size(k), k)
        _, candidates = self.approximate.search(queries, pool, filter=filter, exclude=exclude)
        wanted = np.unique(candidates[candidates >= 0])
        ids, raw = self.store.vectors_present(wanted)  # ascending, as asked
        # A few queries' candidates are a small product: one BLAS thread does it as fast, and
        # leaves none spinning (OpenBLAS's threads took it from 1 ms to 75 ms on 2 busy cores).
        few = blas.one_thread() if len(queries) <= FEW_QUERIES else contextlib.nullcontext()
        with few:
            vectors = self.codec.transform(raw) if len(ids) else raw
            return rescore(queries, candidates, ids, vectors, k)
