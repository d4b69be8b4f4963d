"""Search results and the query side of the pipeline: query -> vector -> top-k -> records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.store import Store
from lookalike.types import Box


@dataclass(frozen=True)
class SearchResult:
    id: int
    path: str
    score: float
    category: str | None = None
    cluster: int | None = None
    box: Box | None = None  # object box (x0, y0, x1, y1, fractions), if localization is on

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "path": self.path, "score": round(self.score, 6)}
        if self.category is not None:
            out["category"] = self.category
        if self.cluster is not None:
            out["cluster"] = self.cluster
        if self.box is not None:
            out["box"] = [round(v, 4) for v in self.box]
        return out


@dataclass(frozen=True)
class QueryOutcome:
    """One query's results, and with category-first search, what was searched."""

    results: list[SearchResult]
    searched: list[str] | None = None  # categories searched; None: the whole collection
    predictions: list[tuple[str, float]] | None = None  # top predicted categories
    query_box: Box | None = None  # where the object was found in the query, if localized


def results_for(
    store: Store, ids: np.ndarray, scores: np.ndarray, min_score: float | None = None
) -> list[list[SearchResult]]:
    """Turn rows of (id, score) into results with the images' metadata."""
    records = store.records(int(i) for i in np.unique(ids) if i >= 0)
    results: list[list[SearchResult]] = []
    for row_ids, row_scores in zip(ids, scores, strict=True):
        row = []
        for i, s in zip(row_ids, row_scores, strict=True):
            record = records.get(int(i))
            if record is None or (min_score is not None and s < min_score):
                continue
            row.append(
                SearchResult(
                    record.id, record.path, float(s), record.category, record.cluster, record.box
                )
            )
        results.append(row)
    return results
