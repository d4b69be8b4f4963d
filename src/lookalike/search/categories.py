"""Category prediction: a linear classifier on the stored vectors, trained per collection.

Categories come from the collection (class folders or a labels CSV). The classifier is fitted
with scikit-learn's logistic regression, then kept as plain arrays (coefficients, intercepts,
class names) so that predicting needs only NumPy: loading scikit-learn would cost a cold
`lookalike search` a second.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from lookalike import config


def stored_precision(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` at the precision every store keeps them: half (PostgreSQL's ``halfvec``).

    The category models are fitted and applied on these, so that a collection gets the same
    classifier, projection and category-aware ranking in SQLite (float32) as in PostgreSQL:
    the discriminant space packs the images of a category close together, and orders them
    by differences as small as half precision's rounding."""
    return np.asarray(vectors, dtype=np.float32).astype(np.float16).astype(np.float32)


@dataclass(frozen=True)
class CategoryModel:
    classes: tuple[str, ...]
    coef: np.ndarray  # (K, D)
    intercept: np.ndarray  # (K,)

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) vectors -> (N, K) class probabilities (softmax of the linear scores)."""
        scores = np.atleast_2d(stored_precision(vectors)) @ self.coef.T + self.intercept
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, vectors: np.ndarray) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(vectors).argmax(axis=1)]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, classes=np.array(self.classes), coef=self.coef, intercept=self.intercept)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CategoryModel:
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
        return cls(tuple(str(c) for c in arrays["classes"]), arrays["coef"], arrays["intercept"])


def fit_classifier(vectors: np.ndarray, labels: list[str], *, c: float = 10.0) -> CategoryModel:
    """Fit a multinomial logistic regression on unit vectors.

    A two-class or larger problem is needed; with one category there is nothing to predict.
    """
    from sklearn.linear_model import LogisticRegression

    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError("category prediction needs at least two categories")
    model = LogisticRegression(C=c, max_iter=300)
    model.fit(stored_precision(vectors), labels)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return CategoryModel(
        tuple(str(c) for c in model.classes_),
        coef.astype(np.float32),
        intercept.astype(np.float32),
    )


def choose_categories(
    probabilities: np.ndarray,
    *,
    coverage: float = config.CATEGORY_COVERAGE,
    max_categories: int = config.MAX_CATEGORIES,
) -> list[int] | None:
    """Indices of the top categories covering ``coverage``; None when that needs too many."""
    order = np.argsort(-probabilities)
    covered = np.cumsum(probabilities[order])
    needed = int(np.searchsorted(covered, coverage) + 1)
    if needed > max_categories:
        return None
    return [int(i) for i in order[:needed]]


def category_weights(
    probabilities: np.ndarray, weight: float = config.CATEGORY_WEIGHT
) -> np.ndarray:
    """What soft category-aware search adds to an image's cosine in the projected space:
    ``weight`` times the log of the predicted probability of the image's category (<= 0;
    a category the classifier rules out weighs -inf only at probability 0)."""
    tiny = np.finfo(np.float32).tiny
    return (weight * np.log(np.maximum(probabilities, tiny))).astype(np.float32)


@dataclass(frozen=True)
class CategoryProjection:
    """A linear map learned from the labels (linear discriminant analysis): vectors of one
    category move together, categories apart. Used by category-aware search only; plain
    search keeps the collection's own vectors (instance matching, see docs/EVALUATION.md)."""

    mean: np.ndarray  # (D,)
    matrix: np.ndarray  # (D, d), d < number of categories

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1])

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, d) unit vectors in the discriminant space."""
        projected = (np.atleast_2d(stored_precision(vectors)) - self.mean) @ self.matrix
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        return (projected / np.maximum(norms, 1e-12)).astype(np.float32)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, matrix=self.matrix)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CategoryProjection:
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
        return cls(arrays["mean"], arrays["matrix"])


def fit_projection(vectors: np.ndarray, labels: list[str]) -> CategoryProjection:
    """Linear discriminant analysis (scikit-learn, eigen solver with Ledoit-Wolf shrinkage:
    stable with few images per category) of ``vectors`` by ``labels``."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if len(set(labels)) < 2:
        raise ValueError("a category projection needs at least two categories")
    vectors = stored_precision(vectors)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    lda.fit(vectors, labels)
    dims = min(len(lda.classes_) - 1, vectors.shape[1])
    matrix = np.asarray(lda.scalings_[:, :dims], dtype=np.float32)
    # (the eigen solver's transform does not centre; cosine in the projected space needs it)
    return CategoryProjection(vectors.mean(axis=0).astype(np.float32), matrix)
