"""Soft category-aware search: every image weighed by the predicted probability of its
category, so that a query the classifier is unsure about still finds its kind first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike import config
from lookalike.collection import Collection
from lookalike.search.categories import category_weights
from lookalike.store.records import EmbeddedImage

KINDS, PER_KIND, DIMS = 8, 20, 1280


def _kinds(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors of 8 kinds (20 each, around random centres), their kinds, the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(KINDS, DIMS))
    kinds = np.repeat(np.arange(KINDS), PER_KIND)
    vectors = centres[kinds] + 2.0 * rng.normal(size=(len(kinds), DIMS))
    return (
        (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32),
        kinds,
        centres,
    )


def _between(centres: np.ndarray, mix: list[float], seed: int) -> np.ndarray:
    """A query vector between kinds: ``mix`` of their centres, plus noise."""
    rng = np.random.default_rng(seed)
    vector = np.array(mix) @ centres[: len(mix)] + rng.normal(size=DIMS)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.fixture
def labelled(tmp_path: Path) -> Iterator[tuple[Collection, np.ndarray]]:
    vectors, kinds, centres = _kinds()
    with Collection.open(tmp_path / "c.db") as collection:
        collection.store.write_batch(
            [EmbeddedImage(f"/photos/{i:06}.jpg", 1, 1, 64, 48, v) for i, v in enumerate(vectors)],
            [],
        )
        collection.set_labels({f"/photos/{i:06}.jpg": f"kind{k}" for i, k in enumerate(kinds)})
        yield collection, centres


def test_an_unsure_query_still_finds_its_kind_first(
    labelled: tuple[Collection, np.ndarray],
) -> None:
    collection, centres = labelled
    query = _between(centres, [0.34, 0.24, 0.22, 0.2], seed=2)
    (unsure,) = collection.search_detailed(
        [query], k=10, by_category=True, category_ranking="filter"
    )
    assert unsure.predictions is not None
    likeliest = unsure.predictions[0][0]
    # no three categories make up 80% of the probability: the filter gives up on them
    assert sum(p for _, p in unsure.predictions[:3]) < config.CATEGORY_COVERAGE
    assert unsure.searched is None
    (outcome,) = collection.search_detailed([query], k=10, by_category=True)
    assert outcome.predictions == unsure.predictions
    assert outcome.searched is not None and outcome.searched[0] == likeliest
    assert [r.category for r in outcome.results] == [likeliest] * 10
    # the score shown is the plain cosine, whatever ordered the results
    plain = {r.id: r.score for r in collection.search_many([query], k=len(collection))[0]}
    assert [r.score for r in outcome.results] == pytest.approx(
        [plain[r.id] for r in outcome.results]
    )


def test_soft_ranking_is_the_weighted_cosine_over_the_whole_collection(
    labelled: tuple[Collection, np.ndarray],
) -> None:
    """Searched a category at a time, the order is the same as scoring every image at once:
    cosine in the labels' projected space plus the weight of its category."""
    collection, centres = labelled
    queries = np.stack(
        [
            _between(centres, [1.0], seed=3),  # sure
            _between(centres, [0.34, 0.24, 0.22, 0.2], seed=4),  # unsure
            _between(centres, [0.2] * 5, seed=5),  # lost
        ]
    )
    snapshot = collection.snapshot()
    assert snapshot.projection is not None and snapshot.classifier is not None
    ids, stored = collection.store.load_vectors()
    codes = np.array(
        [
            snapshot.classifier.classes.index(r.category)
            for r in (collection.store.records(ids.tolist())[int(i)] for i in ids)
        ]
    )
    weights = category_weights(snapshot.classifier.predict_proba(queries))
    scores = snapshot.projection.transform(queries) @ snapshot.projection.transform(stored).T
    scores += weights[:, codes]
    k = 45  # more than two categories' worth: the lost query searches several
    expected = ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
    outcomes = collection.search_detailed(list(queries), k=k, by_category=True)
    for outcome, want in zip(outcomes, expected, strict=True):
        assert [r.id for r in outcome.results] == want.tolist()
        assert outcome.searched is not None
        assert {r.category for r in outcome.results} <= set(outcome.searched)
    # a query the classifier is sure of searches its category alone for its top 10
    (sure,) = collection.search_detailed(list(queries[:1]), k=10, by_category=True)
    assert sure.searched == ["kind0"]


def test_after_the_last_round_the_rest_is_searched_together(
    labelled: tuple[Collection, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    collection, centres = labelled
    monkeypatch.setattr(config, "CATEGORY_ROUNDS", 2)
    query = _between(centres, [0.2] * 5, seed=5)
    (outcome,) = collection.search_detailed([query], k=len(collection), by_category=True)
    assert outcome.searched is None  # went on to every category
    ids = [r.id for r in outcome.results]
    assert len(ids) == len(set(ids)) == len(collection)  # each image once, none lost
