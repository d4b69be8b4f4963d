"""Search results and the query side of the pipeline: query -> vector -> top-k -> paths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.store import Store
from lookalike.vector_index import VectorIndex


@dataclass(frozen=True)
class SearchResult:
    id: int
    path: str
    score: float

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "path": self.path, "score": round(self.score, 6)}


def top_k(
    store: Store,
    index: VectorIndex,
    vectors: np.ndarray,
    *,
    k: int,
    min_score: float | None = None,
    exclude: list[int | None] | None = None,
) -> list[list[SearchResult]]:
    """Top-``k`` results per query vector, each list best first, scores >= ``min_score``."""
    ids, scores = index.search(vectors, k, exclude)
    paths = store.paths(int(i) for i in np.unique(ids) if i >= 0)
    results: list[list[SearchResult]] = []
    for row_ids, row_scores in zip(ids, scores, strict=True):
        row = [
            SearchResult(int(i), paths[int(i)], float(s))
            for i, s in zip(row_ids, row_scores, strict=True)
            if i >= 0 and int(i) in paths and (min_score is None or s >= min_score)
        ]
        results.append(row)
    return results
