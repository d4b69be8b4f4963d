"""Retrieval quality: the leave-one-out category protocol.

Every labelled image is a query against all other indexed images (itself left out); an
image is relevant when it has the query's category. Images of "distractor" categories
(Caltech-101's BACKGROUND_Google, say) stay in the database but are never queries.
Reported: mAP (average precision over the full ranking), precision@10 and top-1 accuracy.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RetrievalScores:
    mean_average_precision: float
    precision_at_10: float
    top1_accuracy: float
    queries: int
    database: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mAP": round(self.mean_average_precision, 4),
            "precision@10": round(self.precision_at_10, 4),
            "top1": round(self.top1_accuracy, 4),
            "queries": self.queries,
            "database": self.database,
        }


def read_labels(root: Path, labels_csv: Path | None = None) -> dict[str, str]:
    """Absolute path -> category.

    From a CSV with ``path`` and ``class_name`` columns (paths relative to the CSV's folder),
    or else from class sub-folders: the first folder level below ``root`` names the category.
    """
    labels: dict[str, str] = {}
    if labels_csv is not None:
        base = labels_csv.parent
        with labels_csv.open(newline="") as handle:
            for row in csv.DictReader(handle):
                labels[os.path.abspath(base / row["path"])] = row["class_name"]
        return labels
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for dirpath, _, files in os.walk(folder):
            for name in files:
                labels[os.path.abspath(os.path.join(dirpath, name))] = folder.name
    return labels


def average_precisions(relevant: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """AP per row of a boolean relevance matrix in rank order (N_queries x N_ranked).

    ``positives`` is the number of relevant items per query, so that a ranking cut short
    still counts relevant items it missed.
    """
    hits = np.cumsum(relevant, axis=1, dtype=np.float64)
    ranks = np.arange(1, relevant.shape[1] + 1, dtype=np.float64)
    precision_at_hits = np.where(relevant, hits / ranks, 0.0).sum(axis=1)
    return np.divide(
        precision_at_hits,
        positives,
        out=np.zeros(len(positives), dtype=np.float64),
        where=positives > 0,
    )


def leave_one_out(
    vectors: np.ndarray,
    labels: list[str],
    *,
    distractors: frozenset[str] = frozenset(),
    chunk: int = 256,
) -> RetrievalScores:
    """Score unit ``vectors`` (one per image, labelled ``labels``) with the protocol above."""
    names, codes = np.unique(np.asarray(labels), return_inverse=True)
    is_distractor = np.isin(names, list(distractors))[codes]
    queries = np.flatnonzero(~is_distractor)
    counts = np.bincount(codes, minlength=len(names))
    aps, p10, top1 = [], [], []
    for start in range(0, len(queries), chunk):
        rows = queries[start : start + chunk]
        scores = vectors[rows] @ vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf  # the query itself
        order = np.argsort(-scores, axis=1, kind="stable")[:, :-1]  # drop self (last)
        relevant = codes[order] == codes[rows][:, None]
        aps.append(average_precisions(relevant, counts[codes[rows]] - 1))
        p10.append(relevant[:, :10].sum(axis=1) / 10)
        top1.append(relevant[:, 0])
    if not aps:
        raise ValueError("no queries: every labelled image is a distractor")
    return RetrievalScores(
        mean_average_precision=float(np.concatenate(aps).mean()),
        precision_at_10=float(np.concatenate(p10).mean()),
        top1_accuracy=float(np.concatenate(top1).mean()),
        queries=len(queries),
        database=len(vectors),
    )
