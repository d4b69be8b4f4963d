"""Re-ranking for collections of categories: database-side augmentation + alpha query expansion.

For collections of categories, not for finding one exact item. Each indexed vector is
replaced by a weighted sum of itself and its nearest neighbours (database-side
augmentation, DBA), and each query by a weighted sum of itself and its top results in the
augmented collection (alpha query expansion, alpha-QE; Radenovic et al., 2018). The weights
are the cosine raised to the power ``alpha``, so near copies count most. Both pull vectors
towards the dense middle of their category: category retrieval improves, while the score of
one exact item against its copy is diluted (see docs/EVALUATION.md).

The neighbour pass asks the vector index (any :class:`lookalike.vector_index.VectorIndex`,
exact or approximate) for each vector's top ``k``: one batched search, never an N x N matrix
in memory.
"""

from __future__ import annotations

import numpy as np

from lookalike.models import normalize
from lookalike.vector_index import ExactIndex, VectorIndex

#: Neighbours (besides the vector itself) averaged into each indexed vector.
DBA_K = 3
#: Top results averaged into each query.
QE_K = 5
#: Weight of a neighbour: cosine ** ALPHA (0 for negative cosines).
ALPHA = 3.0
#: Rows per neighbour-pass batch (bounds the score matrix of an exact index).
BATCH = 1024


def exact_neighbours(vectors: np.ndarray, k: int = DBA_K) -> tuple[np.ndarray, np.ndarray]:
    """Rows and cosines of each row's ``k`` nearest other rows, by an exact index."""
    return neighbours(ExactIndex(np.arange(len(vectors)), vectors), vectors, k)


def neighbours(
    index: VectorIndex, vectors: np.ndarray, k: int = DBA_K, *, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's ``k`` nearest other indexed items, as index ids, with their cosines.

    ``ids`` (the vectors' own ids in the index, default 0..N-1) are left out of their own
    results."""
    own = np.arange(len(vectors)) if ids is None else ids
    found_ids, found_scores = [], []
    for start in range(0, len(vectors), BATCH):
        chunk = slice(start, start + BATCH)
        got_scores, got_ids = index.search(vectors[chunk], k, exclude=[int(i) for i in own[chunk]])
        found_ids.append(got_ids)
        found_scores.append(got_scores)
    if not found_ids:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate(found_ids), np.concatenate(found_scores)


def weighted_sum(
    vectors: np.ndarray, others: np.ndarray, scores: np.ndarray, alpha: float = ALPHA
) -> np.ndarray:
    """Each row of ``vectors`` (weight 1) plus its ``others`` (N, k, D) weighted by
    max(score, 0) ** alpha, renormalised. Missing neighbours have score -inf (weight 0)."""
    weights = np.power(np.maximum(np.nan_to_num(scores, neginf=0.0), 0.0), alpha)
    return normalize(vectors + (weights[:, :, None] * others).sum(axis=1))


def augment_database(
    vectors: np.ndarray, found: tuple[np.ndarray, np.ndarray], alpha: float = ALPHA
) -> np.ndarray:
    """Database-side augmentation: ``found`` are the rows and cosines of each row's
    neighbours (rows -1 when missing)."""
    rows, scores = found
    scores = np.where(rows >= 0, scores, -np.inf)
    return weighted_sum(vectors, vectors[np.maximum(rows, 0)], scores, alpha)


def expand_queries(
    queries: np.ndarray, database: np.ndarray, k: int = QE_K, alpha: float = ALPHA
) -> np.ndarray:
    """Alpha query expansion of each query with its top ``k`` rows of ``database``."""
    scores, rows = ExactIndex(np.arange(len(database)), database).search(queries, k)
    scores = np.where(rows >= 0, scores, -np.inf)
    return weighted_sum(queries, database[np.maximum(rows, 0)], scores, alpha)
