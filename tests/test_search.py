"""Exact top-k search, and searching a collection of real photos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Collection
from lookalike.encode.models import normalize
from lookalike.index.exact import ExactIndex


def test_exact_index_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    vectors = normalize(rng.normal(size=(500, 32)))
    queries = normalize(rng.normal(size=(7, 32)))
    ids = np.arange(500) * 3 + 10  # ids need not be positions
    found_scores, found_ids = ExactIndex(ids, vectors).search(queries, 12)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :12]
    np.testing.assert_array_equal(found_ids, ids[expected])
    assert (np.diff(found_scores, axis=1) <= 0).all()


def test_exact_index_excludes_and_pads() -> None:
    vectors = normalize(np.eye(3, dtype=np.float32))
    index = ExactIndex(np.array([5, 6, 7]), vectors)
    scores, ids = index.search(vectors[:2], 5, exclude=[5, None])
    assert ids[0].tolist() == [6, 7, -1, -1, -1]  # itself left out, then padding
    assert ids[1][0] == 6 and scores[1][0] == pytest.approx(1.0)
    assert np.isneginf(scores[0][2:]).all()


def test_empty_index() -> None:
    _, ids = ExactIndex(np.empty(0, np.int64), np.empty((0, 4), np.float32)).search(
        np.ones((1, 4), np.float32), 3
    )
    assert ids.tolist() == [[-1, -1, -1]]


@pytest.fixture
def indexed(photos: Path, tmp_path: Path) -> Collection:
    collection = Collection.open(tmp_path / "c.db")
    report = collection.add([photos])
    assert report.added == 30 and not report.skipped
    return collection


def test_real_photos_find_their_category(indexed: Collection, panda_query: Path) -> None:
    results = indexed.search(panda_query, k=5)
    assert len(results) == 5
    assert all("/panda/" in r.path for r in results), [r.path for r in results]
    assert all(0 < r.score <= 1.0 + 1e-6 for r in results)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_queries_by_bytes_image_and_path_agree(indexed: Collection, panda_query: Path) -> None:
    by_path = indexed.search(panda_query, k=3)
    by_bytes = indexed.search(panda_query.read_bytes(), k=3)
    by_image = indexed.search(Image.open(panda_query), k=3)
    assert [r.path for r in by_path] == [r.path for r in by_bytes] == [r.path for r in by_image]
    np.testing.assert_allclose([r.score for r in by_path], [r.score for r in by_bytes], atol=1e-5)


def test_more_like_this_uses_stored_vector_and_leaves_itself_out(
    indexed: Collection, photos: Path
) -> None:
    own = photos / "sunflower" / "image_0003.jpg"
    results = indexed.search(own, k=4)
    assert str(own) not in [r.path for r in results]
    assert sum("/sunflower/" in r.path for r in results) >= 3


def test_exact_copy_scores_one(indexed: Collection, photos: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.jpg"
    copy.write_bytes((photos / "cup" / "image_0004.jpg").read_bytes())
    best = indexed.search(copy, k=1)[0]
    assert best.path == str(photos / "cup" / "image_0004.jpg")
    assert best.score == pytest.approx(1.0, abs=1e-5)


def test_min_score_and_k(indexed: Collection, panda_query: Path) -> None:
    everything = indexed.search(panda_query, k=100)
    assert len(everything) == 30
    threshold = everything[4].score
    assert len(indexed.search(panda_query, k=100, min_score=threshold)) == 5


def test_search_many_shares_one_model_run(
    indexed: Collection, panda_query: Path, photos: Path
) -> None:
    queries = [panda_query, photos / "chair" / "image_0002.jpg"]
    results = indexed.search_many(queries, k=2)
    assert len(results) == 2
    assert "/panda/" in results[0][0].path and "/chair/" in results[1][0].path


def test_index_sees_changes_made_after_it_was_loaded(indexed: Collection, photos: Path) -> None:
    before = len(indexed.index())
    indexed.remove([photos / "cup"])
    assert len(indexed.index()) == before - 5
    assert not any(
        "/cup/" in r.path for r in indexed.search(photos / "chair" / "image_0002.jpg", k=30)
    )


def test_changed_indexed_file_is_embedded_afresh(indexed: Collection, photos: Path) -> None:
    """A query path that is indexed but changed on disk since is not searched with the
    stale stored vector."""
    target = photos / "panda" / "image_0002.jpg"
    target.write_bytes((photos / "starfish" / "image_0005.jpg").read_bytes())
    results = indexed.search(target, k=2)
    assert results[0].path == str(photos / "starfish" / "image_0005.jpg")
    assert results[0].score == pytest.approx(1.0, abs=1e-5)


def test_index_follows_changes_incrementally(tmp_path: Path) -> None:
    """After adds, re-embeds and removals, the live index equals one built from scratch,
    and it was brought up to date by reading only the rows written since the last load."""
    from lookalike.store.records import EmbeddedImage

    rng = np.random.default_rng(0)

    def batch(names: list[str]) -> list[EmbeddedImage]:
        vectors = normalize(rng.normal(size=(len(names), 8)))
        return [
            EmbeddedImage(f"/x/{n}.jpg", 1, 1, 4, 4, v) for n, v in zip(names, vectors, strict=True)
        ]

    with Collection.open(tmp_path / "c.db") as live:
        live.store.write_batch(batch([f"a{i}" for i in range(20)]), [])
        assert len(live.index()) == 20
        since: list[float] = []
        original = live.store.vectors_since

        def spy(t: float):  # type: ignore[no-untyped-def]
            since.append(t)
            return original(t)

        live.store.vectors_since = spy  # type: ignore[method-assign]
        live.store.write_batch(batch([f"b{i}" for i in range(5)]), [])  # new rows
        live.store.write_batch(batch(["a3", "a7"]), [])  # re-embedded rows
        live.store.remove(["/x/a0.jpg", "/x/b2.jpg"])
        index = live.index()
        assert since and all(np.isfinite(t) for t in since)  # never a full reload
        with Collection.open(tmp_path / "c.db") as fresh:
            rebuilt = fresh.index()
            np.testing.assert_array_equal(index.ids, rebuilt.ids)
            np.testing.assert_allclose(index.vectors, rebuilt.vectors)
        assert len(index) == 23 and (np.diff(index.ids) > 0).all()


def test_added_rows_share_storage_and_leave_the_old_index_alone() -> None:
    rng = np.random.default_rng(1)
    first = ExactIndex(np.arange(3), normalize(rng.normal(size=(3, 4))))
    second = first.add(np.array([5, 6]), normalize(rng.normal(size=(2, 4))))
    third = second.add(np.array([9]), normalize(rng.normal(size=(1, 4))))
    assert len(first) == 3 and len(second) == 5 and len(third) == 6
    assert np.shares_memory(second.vectors, third.vectors)  # grown in place, not copied
    np.testing.assert_array_equal(third.vectors[:3], first.vectors)
    assert third.search(third.vectors[5:6], 1)[1][0, 0] == 9
    older = third.add(np.array([4]), normalize(rng.normal(size=(1, 4))))  # an update: a copy
    assert older.ids.tolist() == [0, 1, 2, 4, 5, 6, 9]
    assert third.ids.tolist() == [0, 1, 2, 5, 6, 9]


def test_two_indexes_grown_from_one_do_not_overwrite_each_other() -> None:
    """Failure 2: two snapshots grown from the same index shared its growth buffer, so the
    second one's rows overwrote the first one's."""
    rng = np.random.default_rng(2)
    base = ExactIndex(np.arange(3), normalize(rng.normal(size=(3, 4)))).add(
        np.array([3]), normalize(rng.normal(size=(1, 4)))
    )
    a_rows = normalize(rng.normal(size=(2, 4)))
    b_rows = normalize(rng.normal(size=(2, 4)))
    a = base.add(np.array([10, 11]), a_rows)
    b = base.add(np.array([20, 21]), b_rows)
    np.testing.assert_allclose(a.vectors[4:], a_rows)
    np.testing.assert_allclose(b.vectors[4:], b_rows)
    assert a.search(a_rows, 1)[1][:, 0].tolist() == [10, 11]


def test_index_removes_and_filters() -> None:
    vectors = normalize(np.eye(4, dtype=np.float32))
    index = ExactIndex(np.array([1, 2, 3, 4]), vectors)
    smaller = index.remove(np.array([2, 99]))
    assert smaller.ids.tolist() == [1, 3, 4] and len(index) == 4
    _, ids = index.search(vectors[1:2], 2, filter=np.array([3, 4]))
    assert set(ids[0].tolist()) == {3, 4}
    np.testing.assert_array_equal(index.vectors_of(np.array([3])), vectors[2:3])


def test_an_unlabelled_upload_keeps_the_classifier_and_the_index_follows(
    photos: Path, tmp_path: Path
) -> None:
    """Failure 2: every upload changed the classifier's key, so every search after it
    reloaded every vector and rebuilt the category partition."""
    from lookalike.analysis.evaluate import read_labels
    from tests.conftest import make_image

    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos])
        collection.set_labels(read_labels(photos))
        assert len(collection.index()) == 30
        key = collection.store.get_meta("classifier_key")
        cursors: list[object] = []
        original = collection.store.vectors_since

        def spy(cursor):  # type: ignore[no-untyped-def]
            cursors.append(cursor)
            return original(cursor)

        collection.store.vectors_since = spy  # type: ignore[method-assign]
        collection.add([make_image(tmp_path / "new" / "x.jpg", seed=3)])
        assert len(collection.index()) == 31
        assert collection.store.get_meta("classifier_key") == key
        assert cursors and all(c is not None and np.isfinite(c) for c in cursors)  # type: ignore[arg-type]


@pytest.mark.parametrize("removed", [1, 5, 300])
def test_removing_rows_keeps_the_others_in_order(removed: int) -> None:
    rng = np.random.default_rng(removed)
    vectors = normalize(rng.normal(size=(1000, 8)))
    index = ExactIndex(np.arange(1000) * 2, vectors)
    gone = rng.choice(1000, size=removed, replace=False) * 2
    smaller = index.remove(gone)
    keep = ~np.isin(index.ids, gone)
    np.testing.assert_array_equal(smaller.ids, index.ids[keep])
    np.testing.assert_array_equal(smaller.vectors, vectors[keep])
    grown = smaller.add(np.array([5000]), vectors[:1])  # into the room left by remove
    assert np.shares_memory(grown.vectors, smaller.vectors)
    np.testing.assert_array_equal(grown.vectors[:-1], vectors[keep])


@pytest.fixture
def labelled(photos: Path, tmp_path: Path) -> Iterator[Collection]:
    from lookalike.cli import main

    db = tmp_path / "labelled.db"
    assert main(["index", str(photos), "--db", str(db), "--categories-from-folders"]) == 0
    with Collection.open(db) as collection:
        yield collection


@pytest.mark.parametrize("mode", [{"rerank": True}, {"expand": 2}, {"by_category": True}], ids=str)
def test_a_result_scores_the_same_whatever_ordered_it(
    labelled: Collection, panda_query: Path, mode: dict[str, object]
) -> None:
    """One meaning of the score (issue 22): re-ranking, query expansion and category-aware
    search choose and order the results, and each result's score is its cosine with the
    query in the collection's common space, as plain search scores it; --min-score and the
    weak mark use that score."""
    queries = [str(panda_query), str(Path(labelled.location).parent / "photos/cup/image_0003.jpg")]
    plain = labelled.search_many(queries, k=len(labelled))
    found = labelled.search_detailed(queries, k=8, **mode)  # type: ignore[arg-type]
    for row, (everything, outcome) in enumerate(zip(plain, found, strict=True)):
        cosine = {hit.id: hit.score for hit in everything}
        assert len(outcome.results) >= 4
        for hit in outcome.results:
            assert hit.score == pytest.approx(cosine[hit.id], abs=1e-5)
        # --min-score cuts on that score, keeping the mode's order
        floor = sorted(hit.score for hit in outcome.results)[2]
        kept = labelled.search_detailed(
            [queries[row]],
            k=8,
            min_score=floor,
            **mode,  # type: ignore[arg-type]
        )[0]
        assert [hit.id for hit in kept.results] == [
            hit.id for hit in outcome.results if hit.score >= floor
        ]
