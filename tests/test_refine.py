"""The refine step of approximate search (lookalike.index.refine): candidates of the FAISS index
re-scored with the store's full vectors, so that a large collection's answer and scores are
those of ``search --exact`` wherever the candidate pool holds the true top k, on dense
families of near-variants (where 8-bit codes cannot order them) as on spread-out images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike import config
from lookalike.collection import Collection
from lookalike.index.ann import AnnIndex
from lookalike.index.persistent import StoreScan
from lookalike.index.refine import RefinedIndex, pool_size, rescore
from lookalike.search.engine import SearchResult
from lookalike.store.records import EmbeddedImage

FAMILIES = 30
VARIANTS = 50


def families(seed: int = 0, dims: int = 1280) -> tuple[np.ndarray, np.ndarray]:
    """Dense families of near-variants: each of ``FAMILIES`` items with ``VARIANTS`` copies
    (the item plus noise at 5% to 100% of the items' own spread), and each row's family."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(FAMILIES, dims))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    family = np.repeat(np.arange(FAMILIES), VARIANTS)
    strength = rng.uniform(0.05, 1.0, len(family))[:, None]
    a, b = (rng.integers(0, FAMILIES, len(family)) for _ in range(2))
    noise = items[a] - items[b]
    vectors = items[family] + strength * noise / np.sqrt(2)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), family


def write(collection: Collection, vectors: np.ndarray) -> None:
    collection.store.write_batch(
        [EmbeddedImage(f"/photos/{i:06}.jpg", 1, 1, 64, 48, v) for i, v in enumerate(vectors)],
        [],
    )


def families_collection(path: Path, setting: str = "auto") -> Collection:
    """1,500 images in dense families, searched with an approximate index (``setting``)."""
    vectors, family = families()
    collection = Collection.open(path)
    write(collection, vectors)
    collection.set_index(setting)
    collection.set_labels({f"/photos/{i:06}.jpg": f"family{f % 3}" for i, f in enumerate(family)})
    collection.refresh_models()
    collection.sync_index()
    return collection


@pytest.fixture
def big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Collection:
    """The families, searched with the default approximate index."""
    monkeypatch.setattr(config, "ANN_MIN_IMAGES", 1000)
    collection = families_collection(tmp_path / "families.db")
    assert collection.index_kind() == config.ANN_KIND
    return collection


def queries_near_items(count: int = 12) -> np.ndarray:
    """Photos not in the collection, each close to one family's item."""
    vectors, _ = families(seed=0)
    rng = np.random.default_rng(5)
    picked = vectors[rng.choice(len(vectors), count, replace=False)]
    noisy = picked + 0.02 * rng.normal(size=picked.shape)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def answers(results: list[list[SearchResult]]) -> tuple[list[list[str]], np.ndarray]:
    return [[r.path for r in row] for row in results], np.array(
        [[r.score for r in row] for row in results]
    )


def assert_same_answer(got: list[list[SearchResult]], want: list[list[SearchResult]]) -> None:
    """The same images with the same scores (to 1e-5), in the same order but for images
    whose scores tie within that (the order of a tie is the float rounding's)."""
    for got_row, want_row in zip(got, want, strict=True):
        assert {r.path: r.id for r in got_row} == {r.path: r.id for r in want_row}
        wanted = {r.path: r.score for r in want_row}
        for r in got_row:
            assert r.score == pytest.approx(wanted[r.path], abs=1e-5)
        np.testing.assert_allclose(
            [r.score for r in got_row], [r.score for r in want_row], atol=1e-5
        )


def test_approximate_search_gives_the_exact_scans_answer_and_scores(big: Collection) -> None:
    queries = list(queries_near_items())
    with big:
        got = big.search_many(queries, k=10)
        want = big.search_many(queries, k=10, exact=True)
        assert_same_answer(got, want)
        exact_scores = answers(want)[1]
        # What the 8-bit codes alone would have given: other scores (and, on families of
        # near-variants, another order), which the refine step replaces.
        index = big.index()
        assert isinstance(index, RefinedIndex)
        encoded = big.snapshot().encode(np.stack(queries))
        coded_scores, _ = index.approximate.search(encoded, 10)
        assert np.abs(coded_scores - exact_scores).max() > 1e-4


def test_the_hnsw_kind_gives_the_exact_answer_too(tmp_path: Path) -> None:
    queries = list(queries_near_items())
    with families_collection(tmp_path / "hnsw.db", "hnsw") as collection:
        assert collection.index_kind() == "hnsw"
        assert_same_answer(
            collection.search_many(queries, k=10),
            collection.search_many(queries, k=10, exact=True),
        )


def test_filters_exclusion_and_expansion_keep_the_exact_answer(big: Collection) -> None:
    queries = list(queries_near_items(6))
    with big:
        for options in ({"by_category": True}, {"expand": 2}):
            got = big.search_detailed(queries, k=10, **options)  # type: ignore[arg-type]
            want = big.search_detailed(queries, k=10, exact=True, **options)  # type: ignore[arg-type]
            assert [g.searched for g in got] == [w.searched for w in want]
            assert_same_answer([g.results for g in got], [w.results for w in want])
        # "More like this" of an indexed image: its stored vector, itself left out.
        snapshot = big.snapshot()
        own = big.store.ids()[42]
        query = snapshot.encode(big.store.vectors_of(np.array([own])))
        scores, ids = snapshot.index.search(query, 10, exclude=[int(own)])
        scan = StoreScan(big.store, snapshot.codec)
        want_scores, want_ids = scan.search(query, 10, exclude=[int(own)])
        assert own not in ids[0] and set(ids[0]) == set(want_ids[0])
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_reranked_results_are_scored_with_the_stored_vectors(big: Collection) -> None:
    queries = queries_near_items(4)
    with big:
        outcomes = big.search_detailed(list(queries), k=10, rerank=True)
        codec = big.snapshot().codec
        stored = {r.path: r.id for o in outcomes for r in o.results}
        ids = np.array(sorted(stored.values()))
        vectors = dict(zip(ids, codec.transform(big.store.vectors_of(ids)), strict=True))
        encoded = codec.transform(queries)
        for outcome, query in zip(outcomes, encoded, strict=True):
            assert outcome.reranked and len(outcome.results) == 10
            for result in outcome.results:
                assert result.score == pytest.approx(float(vectors[result.id] @ query), abs=1e-5)


def test_a_candidate_removed_since_it_was_found_is_left_out(big: Collection) -> None:
    with big:
        index = big.index()
        assert isinstance(index, RefinedIndex)
        query = queries_near_items(1)
        encoded = big.snapshot().encode(query)
        _, before = index.search(encoded, 10)
        gone = int(before[0, 0])
        # The store forgets it; the FAISS index (followed only at the next snapshot) not yet.
        big.store.remove([big.store.records([gone])[gone].path])
        assert gone in index.approximate.ids
        _, after = index.search(encoded, 10)
        assert gone not in after[0] and (after[0] >= 0).all()
        # Its vector is gone with it: zeros (a score of 0), the others' are the stored ones.
        kept = int(after[0, 0])
        vectors = index.vectors_of(np.array([gone, kept]))
        assert not vectors[0].any()
        np.testing.assert_allclose(
            vectors[1], big.snapshot().encode(big.store.vectors_of(np.array([kept])))[0], atol=1e-6
        )
        with pytest.raises(KeyError):
            index.vectors_of(np.array([10**9]))


def test_rescore_orders_candidates_by_their_vectors() -> None:
    vectors = np.eye(4, dtype=np.float32)
    query = np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32)
    candidates = np.array([[30, 10, 20, -1, 99]])  # 99: no longer stored; -1: padding
    scores, ids = rescore(query, candidates, np.array([10, 20, 30, 40]), vectors, 4)
    assert ids.tolist() == [[20, 30, 10, -1]]
    np.testing.assert_allclose(scores[0, :3], [0.9, 0.5, 0.1])
    assert scores[0, 3] == -np.inf


def test_the_pool_grows_with_k() -> None:
    assert pool_size(1) == config.ANN_REFINE_POOL
    assert pool_size(1000) == config.ANN_REFINE_PER_RESULT * 1000 > config.ANN_REFINE_POOL


def test_refined_index_is_what_a_large_collection_searches(big: Collection) -> None:
    with big:
        index = big.index()
        assert isinstance(index, RefinedIndex) and isinstance(index.approximate, AnnIndex)
        assert len(index) == FAMILIES * VARIANTS
        some = index.ids[:5]
        np.testing.assert_allclose(
            index.vectors_of(some),
            big.snapshot().codec.transform(big.store.vectors_of(some)),
            atol=1e-6,
        )


def test_reranking_scores_the_neighbours_it_finds_with_the_stored_vectors(big: Collection) -> None:
    with big:
        snapshot = big.snapshot()
        augmented = snapshot.augmented()
        assert augmented is not None and not augmented.exact
        rows = np.arange(0, len(augmented.ids), 97)
        vectors = snapshot.index.vectors_of(augmented.ids[rows])
        for row, vector in zip(rows, vectors, strict=True):
            found = augmented.neighbour_ids[row]
            assert (found >= 0).all() and augmented.ids[row] not in found
            want = snapshot.index.vectors_of(found) @ vector
            np.testing.assert_allclose(augmented.neighbour_scores[row], want, atol=1e-5)
            assert (np.diff(augmented.neighbour_scores[row]) <= 0).all()
