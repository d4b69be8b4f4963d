"""The category projection (LDA) learned from labels, used by category-aware search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection
from lookalike.analysis.evaluate import read_labels
from lookalike.encode.models import normalize
from lookalike.search.categories import CategoryProjection, fit_projection


def _labelled_blobs(n: int = 240, classes: int = 6, dim: int = 40) -> tuple[np.ndarray, list]:
    """Categories that differ along a few directions, hidden under large shared noise in
    others: plain cosine confuses them, the projection learns which directions matter."""
    rng = np.random.default_rng(0)
    centres = np.zeros((classes, dim))
    centres[:, :3] = rng.normal(size=(classes, 3)) * 1.5
    labels = [f"c{i % classes}" for i in range(n)]
    noise = rng.normal(size=(n, dim)) * np.r_[np.full(3, 0.3), np.full(dim - 3, 1.5)]
    return normalize(centres[[i % classes for i in range(n)]] + noise), labels


def _precision_at_5(vectors: np.ndarray, labels: list[str]) -> float:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1)[:, :5]
    codes = np.array(labels)
    return float((codes[top] == codes[:, None]).mean())


def test_projection_separates_categories_and_round_trips() -> None:
    vectors, labels = _labelled_blobs()
    train = np.arange(len(vectors)) // 6 % 2 == 0  # half of each category
    train_labels = [x for x, t in zip(labels, train, strict=True) if t]
    projection = fit_projection(vectors[train], train_labels)
    assert projection.dims == 5  # categories - 1
    held_out = vectors[~train]
    held_labels = [x for x, t in zip(labels, train, strict=True) if not t]
    plain = _precision_at_5(held_out, held_labels)
    projected = _precision_at_5(projection.transform(held_out), held_labels)
    assert projected > plain + 0.2
    again = CategoryProjection.from_bytes(projection.to_bytes())
    np.testing.assert_allclose(again.transform(held_out), projection.transform(held_out))
    with pytest.raises(ValueError):
        fit_projection(vectors, ["same"] * len(vectors))


def test_category_search_uses_the_projection_refitted_on_label_changes(
    photos: Path, tmp_path: Path, panda_query: Path
) -> None:
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos])
        assert collection.category_projection() is None  # no labels yet
        collection.set_labels(read_labels(photos))
        first = collection.category_projection()
        assert first is not None and first.dims == 5
        (outcome,) = collection.search_detailed([panda_query], k=5, by_category=True)
        assert [r.category for r in outcome.results] == ["panda"] * 5
        # the results are ranked in the projected space: in the order of its cosines...
        ids = [r.id for r in outcome.results]
        raw, _ = collection.query_vectors([panda_query])
        all_ids, stored = collection.store.load_vectors()
        rows = np.searchsorted(all_ids, ids)
        projected = first.transform(stored[rows]) @ first.transform(raw[:1])[0]
        assert (np.diff(projected) <= 1e-6).all()
        # ...and each scores its cosine in the collection's own space, as plain search does
        plain = collection.search_detailed([panda_query], k=len(collection))[0].results
        cosine = {r.id: r.score for r in plain}
        assert [r.score for r in outcome.results] == pytest.approx([cosine[i] for i in ids])
        assert [r.id for r in plain[:5]] != ids  # plain search orders them otherwise
        # two pandas relabelled as chairs: the categories' make-up changed, refitted
        moved = sorted((photos / "panda").iterdir())[:2]
        collection.set_labels({str(p): "chair" for p in moved})
        second = collection.category_projection()
        assert second is not None and not np.allclose(second.matrix, first.matrix)
