"""Calibrated confidences beside the score: the probability that a result is the same item
as the query (a copy: re-encoded, resized, cropped, recoloured, watermarked, framed) and that
it is the same kind (the same category).

A cosine means different things in different models and collections; these are fitted per
model (logistic regression on the result's cosine and its margin over the best other result
of the same query) by ``benchmarks/eval_calibration.py`` on Caltech-101, and measured there on
held-out collections (docs/EVALUATION.md, "Calibrated confidences"). The coefficients ship in
``calibration.json`` beside this module, keyed by the model's label; a model without an entry
gets no confidences (None).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The fitted coefficients, by model label (``efficientnet-lite0 (int8)``) and target.
TABLE = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class Logistic:
    """P = sigmoid(coefficients . features + intercept); features: ``cosine`` and, if
    named, ``margin`` (the cosine minus the best other result's of the same query)."""

    coefficients: list[float]
    intercept: float
    features: tuple[str, ...] = ("cosine", "margin")

    def predict(self, cosine: np.ndarray, margin: np.ndarray) -> np.ndarray:
        columns = {"cosine": cosine, "margin": margin}
        z = np.full(np.shape(cosine), self.intercept, dtype=np.float64)
        for name, weight in zip(self.features, self.coefficients, strict=True):
            z = z + weight * np.asarray(columns[name], dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def as_dict(self) -> dict[str, Any]:
        return {
            "coefficients": self.coefficients,
            "intercept": self.intercept,
            "features": list(self.features),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Logistic:
        return cls(
            [float(c) for c in data["coefficients"]],
            float(data["intercept"]),
            tuple(data["features"]),
        )


def margins(scores: np.ndarray) -> np.ndarray:
    """Each result's cosine minus the best other result's of the same query (rows of
    ``scores``, -inf where there is no result); 0 where a query has a single result."""
    finite = np.where(np.isfinite(scores), scores, -np.inf)
    out = np.zeros(scores.shape, dtype=np.float64)
    for i, row in enumerate(finite):
        order = np.argsort(-row)
        if len(row) < 2 or not np.isfinite(row[order[1]]):
            continue
        best, second = row[order[0]], row[order[1]]
        out[i] = row - best
        out[i, order[0]] = best - second
    return out


@dataclass(frozen=True)
class Calibration:
    """One model's confidences."""

    same_item: Logistic
    same_kind: Logistic

    def confidences(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(same item), P(same kind)) of every result of rows of common-space ``scores``."""
        margin = margins(scores)
        return self.same_item.predict(scores, margin), self.same_kind.predict(scores, margin)


def load_table() -> dict[str, Any]:
    if not TABLE.is_file():
        return {}
    loaded: dict[str, Any] = json.loads(TABLE.read_text())
    return loaded


@functools.cache
def for_model(label: str) -> Calibration | None:
    """The calibration of the model of this label, None if it has not been fitted."""
    entry = load_table().get(label)
    if entry is None:
        return None
    return Calibration(
        Logistic.from_dict(entry["same_item"]), Logistic.from_dict(entry["same_kind"])
    )
