"""Re-ranking (DBA + alpha-QE) and the held-out protocol that measures it."""

from __future__ import annotations

import numpy as np

from lookalike.analysis.evaluate import EvalConfig, held_out
from lookalike.encode.models import normalize
from lookalike.index.exact import ExactIndex
from lookalike.search import rerank


def _clusters(n: int = 300, classes: int = 10, dim: int = 32) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim))
    labels = [f"c{i % classes}" for i in range(n)]
    vectors = centres[[i % classes for i in range(n)]] + rng.normal(size=(n, dim)) * 1.2
    return normalize(vectors), labels


def test_neighbour_pass_uses_the_index_and_leaves_each_vector_out() -> None:
    vectors, _ = _clusters(50)
    index = ExactIndex(np.arange(100, 150), vectors)
    ids, scores = rerank.neighbours(index, vectors, 3, ids=np.arange(100, 150))
    assert ids.shape == (50, 3) and not (ids == np.arange(100, 150)[:, None]).any()
    full = vectors @ vectors.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_allclose(scores[:, 0], full.max(axis=1), atol=1e-5)


def test_augmentation_and_expansion_lift_category_retrieval_held_out() -> None:
    vectors, labels = _clusters()
    plain = held_out(vectors, labels)
    reranked = held_out(vectors, labels, rerank_db=True)
    assert reranked.mean_average_precision > plain.mean_average_precision + 0.02
    augmented = rerank.augment_database(vectors, rerank.exact_neighbours(vectors))
    np.testing.assert_allclose(np.linalg.norm(augmented, axis=1), 1.0, atol=1e-5)
    # a vector without neighbours (-1) stays itself
    alone = rerank.augment_database(vectors[:2], (np.full((2, 3), -1), np.zeros((2, 3))))
    np.testing.assert_allclose(alone, vectors[:2], atol=1e-6)


def test_eval_config_keys_of_issue_11() -> None:
    old = EvalConfig.parse("model=lite0,pool=avg,pca=off")
    assert old.pca is None and old.pooling == "avg" and old.name.endswith("pca=off")
    new = EvalConfig.parse("model=lite0")
    assert new.pooling == "gem" and new.pca == 0
    assert EvalConfig.parse("model=lite0,rerank=1").rerank
    assert EvalConfig.parse("model=lite0,heldout=1").name.endswith("heldout=1")


def test_the_plain_top_and_results_as_good_as_it_stay_first_in_plain_order() -> None:
    plain_scores = np.array([[0.9, 0.88, 0.5], [0.7, 0.6, 0.59], [0.8, -np.inf, -np.inf]])
    plain_ids = np.array([[4, 7, 1], [2, 3, 5], [6, -1, -1]])
    reranked = np.array([[1, 7, 4, 9, 2], [5, 3, 2, 8, 0], [0, 1, 6, -1, -1]])
    kept = rerank.keep_plain_top((plain_scores, plain_ids), reranked, keep=3, near=0.05)
    # row 0: 4 (the top) and 7 (within 0.05 of it) first, 1 (0.4 below) left to re-ranking
    assert kept[0].tolist() == [4, 7, 1, 9, 2]
    # row 1: only the top kept (3 is 0.1 below it), each id once, the width kept
    assert kept[1].tolist() == [2, 5, 3, 8, 0]
    assert kept[2].tolist() == [6, 0, 1, -1, -1]


def test_held_out_rerank_keeps_the_plain_top_one() -> None:
    vectors, labels = _clusters()
    plain = held_out(vectors, labels)
    reranked = held_out(vectors, labels, rerank_db=True)
    assert reranked.top1_accuracy == plain.top1_accuracy
