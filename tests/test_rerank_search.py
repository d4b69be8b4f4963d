"""Re-ranking as an option of the one search path: snapshot-bound augmented vectors,
exact and approximate indexes, category-first search, small collections, concurrent writes,
the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection, config
from lookalike.analysis.evaluate import evaluation_snapshot
from lookalike.cli import main
from lookalike.encode.models import normalize
from lookalike.index import registry as indexes
from lookalike.index.exact import ExactIndex
from lookalike.search import engine as search
from lookalike.search import rerank
from lookalike.search.snapshot import SearchSnapshot
from lookalike.store.records import ImageRecord
from tests.conftest import make_image


def _categories(
    per_class: int, classes: int = 12, dim: int = 32, seed: int = 0, noise: float = 1.3
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one centre per category (the same centres for every seed)."""
    centres = np.random.default_rng(0).normal(size=(classes, dim))
    rng = np.random.default_rng(seed)
    codes = np.arange(classes * per_class) % classes
    return normalize(centres[codes] + noise * rng.normal(size=(len(codes), dim))), codes


def _snapshot(vectors: np.ndarray, codes: np.ndarray, kind: str = "exact") -> SearchSnapshot:
    snapshot = evaluation_snapshot(
        vectors, np.array([f"c{c}" for c in range(codes.max() + 1)]), codes, None
    )
    if kind != "exact":
        index = indexes.build_index(kind, snapshot.index.ids, vectors)
        snapshot = SearchSnapshot(index, snapshot.codec, None, snapshot.partition, (), None)
    return snapshot


def _precision_at_10(ids: np.ndarray, db_codes: np.ndarray, query_codes: np.ndarray) -> float:
    return float((db_codes[ids[:, :10]] == query_codes[:, None]).mean())


def test_rerank_lifts_category_precision_for_new_queries() -> None:
    database, db_codes = _categories(30)
    queries, query_codes = _categories(10, seed=1)
    snapshot = _snapshot(database, db_codes)
    _, plain = search.rank(snapshot, queries, 10)
    augmented = snapshot.augmented()
    assert augmented is not None and augmented.exact
    scores, reranked = search.rank(snapshot, queries, 10, augmented=augmented)
    before = _precision_at_10(plain, db_codes, query_codes)
    after = _precision_at_10(reranked, db_codes, query_codes)
    assert after > before + 0.03, (before, after)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    # the database vectors moved towards their category: closer to their own centre
    centres = normalize(np.stack([database[db_codes == c].mean(0) for c in range(12)]))
    own = centres[db_codes]
    assert (augmented.vectors * own).sum(1).mean() > (database * own).sum(1).mean() + 0.02


def test_approximate_index_rescores_a_pool_and_keeps_the_gain() -> None:
    pytest.importorskip("faiss")
    database, db_codes = _categories(30)
    queries, query_codes = _categories(10, seed=1)
    exact = _snapshot(database, db_codes)
    hnsw = _snapshot(database, db_codes, "hnsw")
    augmented = hnsw.augmented()
    assert augmented is not None and not augmented.exact
    np.testing.assert_array_equal(augmented.ids, exact.index.ids)
    _, plain = search.rank(hnsw, queries, 10)
    _, pooled = search.rank(hnsw, queries, 10, augmented=augmented)
    _, full = search.rank(exact, queries, 10, augmented=exact.augmented())
    assert _precision_at_10(pooled, db_codes, query_codes) > _precision_at_10(
        plain, db_codes, query_codes
    )
    # the pool (200 of 360) holds nearly every re-ranked top 10
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pooled, full, strict=True)])
    assert overlap > 0.9


def test_rerank_keeps_to_the_searched_categories_and_leaves_the_query_out() -> None:
    database, db_codes = _categories(20)
    snapshot = _snapshot(database, db_codes)
    _, ids = search.rank(
        snapshot,
        database[:3],
        15,
        exclude=[0, 1, 2],
        searched=[["c0"], None, ["c2", "c3"]],
        augmented=snapshot.augmented(),
    )
    assert set(db_codes[ids[0][ids[0] >= 0]]) == {0} and (ids[0] >= 0).sum() == 15
    assert set(db_codes[ids[2]]) <= {2, 3}
    assert not any(i in row for i, row in enumerate(ids))


def test_following_a_change_equals_building_afresh() -> None:
    database, _ = _categories(30)
    first = ExactIndex(np.arange(200), database[:200])
    built = rerank.AugmentedVectors.build(first)
    assert built.searched == 200
    changed = first.remove(np.array([3, 50, 51])).add(np.arange(200, 205), database[200:205])
    changed = changed.add(np.array([7]), database[300:301])  # id 7 now another image
    followed = built.follow(changed)
    fresh = rerank.AugmentedVectors.build(changed)
    assert followed.searched < len(changed.ids) // 2
    np.testing.assert_array_equal(followed.ids, fresh.ids)
    np.testing.assert_array_equal(followed.neighbour_ids, fresh.neighbour_ids)
    np.testing.assert_allclose(followed.vectors, fresh.vectors, atol=1e-5)


def test_too_small_a_collection_is_searched_plainly_and_says_so() -> None:
    database, codes = _categories(1, classes=config.RERANK_MIN_IMAGES - 1)
    snapshot = _snapshot(database, codes)
    assert snapshot.augmented() is None
    described = search.DescribedQueries(database[:2], [0, 1], [None, None])
    store = _NoRecords()
    (plain, _) = search.search(snapshot, store, described, search.SearchOptions(k=3))  # type: ignore[arg-type]
    outcomes = search.search(snapshot, store, described, search.SearchOptions(k=3, rerank=True))  # type: ignore[arg-type]
    assert not plain.reranked and not any(o.reranked for o in outcomes)
    bigger = _snapshot(*_categories(1, classes=config.RERANK_MIN_IMAGES))
    outcomes = search.search(bigger, store, described, search.SearchOptions(k=3, rerank=True))  # type: ignore[arg-type]
    assert all(o.reranked for o in outcomes)


class _Records:
    """A store with a record for every id (``i`` at path ``/i.jpg``)."""

    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        return {i: ImageRecord(i, f"/{i}.jpg", 8, 8, None, None, None) for i in ids}


def test_a_near_copy_keeps_its_source_at_the_top_with_re_ranking() -> None:
    """DBA + alpha-QE pull a query towards the middle of its category: on tight categories
    that moves a few near copies' sources (cosine >= 0.95) off the top; the search path's
    re-ranking keeps the plain search's best match first, and still re-orders the rest."""
    database, codes = _categories(30, noise=0.8)
    snapshot = _snapshot(database, codes)
    rng = np.random.default_rng(5)
    copies = normalize(database + 0.2 * rng.normal(size=database.shape) / np.sqrt(32))
    assert ((copies * database).sum(axis=1) >= 0.95).all()
    sources = np.arange(len(database))
    augmented = snapshot.augmented()
    assert augmented is not None
    _, expanded = augmented.search(
        snapshot.index, copies, 10, filters=[None] * len(copies), exclude=[None] * len(copies)
    )
    assert (expanded[:, 0] != sources).any()  # what expansion alone does to some of them
    described = search.DescribedQueries(copies, [None] * len(copies), [None] * len(copies))
    store = _Records()
    plain = search.search(snapshot, store, described, search.SearchOptions(k=10))  # type: ignore[arg-type]
    reranked = search.search(snapshot, store, described, search.SearchOptions(k=10, rerank=True))  # type: ignore[arg-type]
    assert all(o.reranked for o in reranked)
    assert [o.results[0].id for o in reranked] == sources.tolist()
    assert [o.results[0].id for o in plain] == sources.tolist()
    # the rest is re-ranked (not the plain order), each scored by its plain cosine
    assert any(
        [r.id for r in p.results] != [r.id for r in o.results]
        for p, o in zip(plain, reranked, strict=True)
    )
    for outcome in reranked:
        ids = [r.id for r in outcome.results]
        cosines = database[ids] @ copies[outcome.results[0].id]
        np.testing.assert_allclose([r.score for r in outcome.results], cosines, atol=1e-5)


class _NoRecords:
    """A store that knows no records (results_for then returns empty rows)."""

    def records(self, ids: object) -> dict[int, object]:
        return {}


def test_augmented_vectors_are_built_once_per_snapshot_under_concurrency() -> None:
    database, codes = _categories(40)
    snapshot = _snapshot(database, codes)
    seen: list[object] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        seen.append(snapshot.augmented())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 6 and all(a is seen[0] for a in seen)
    # another snapshot (even of the same index) has its own
    other = SearchSnapshot(snapshot.index, snapshot.codec, None, snapshot.partition, (), None)
    assert other.augmented() is not seen[0]


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_off_by_default_and_concurrent_writes_never_mix_snapshots(
    tmp_path: Path, kind: str
) -> None:
    if kind == "hnsw":
        pytest.importorskip("faiss")
    folder = tmp_path / "photos"
    for i in range(14):
        make_image(folder / f"a{i}.jpg", seed=i)
    with Collection.open(tmp_path / "c.db") as collection:
        collection.set_index(kind)
        collection.add([folder])
        assert collection.index_kind() == kind
        query = folder / "a0.jpg"
        (default,) = collection.search_detailed([query], k=5)
        assert not default.reranked
        (reranked,) = collection.search_detailed([query], k=5, rerank=True)
        assert reranked.reranked and str(query) not in [r.path for r in reranked.results]
        assert collection.search(query, k=5) == default.results
        with pytest.raises(ValueError, match="not both"):
            collection.search_detailed([query], rerank=True, expand=3)

        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    snapshot = collection.snapshot()
                    augmented = snapshot.augmented()
                    assert augmented is not None
                    if kind == "exact":  # (an approximate index changes in place)
                        np.testing.assert_array_equal(augmented.ids, snapshot.index.ids)
                    (outcome,) = collection.search_detailed([query], k=5, rerank=True)
                    assert outcome.reranked and len(outcome.results) == 5
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            for i in range(14, 20):  # writes while re-ranked searches run
                collection.add([make_image(tmp_path / "more" / f"b{i}.jpg", seed=i)])
                collection.remove([folder / f"a{i - 13}.jpg"])
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not errors, errors[0]
        # after the writes, the vectors (followed from whichever snapshot the readers
        # augmented last: how far behind depends on the threads' timing) are right; an
        # approximate index rebuilt in the background meanwhile (the removals pass its
        # tombstone share) has been swapped in first, so the next write follows this one
        collection.snapshots.finish_rebuilds()
        _assert_as_built(collection.snapshot())
        # one more write: its snapshot's vectors follow the last ones, searching again only
        # the rows it may change (not every row: that is what a fresh build does)
        collection.add([make_image(tmp_path / "more" / "c.jpg", seed=99)])
        last = collection.snapshot()
        followed = _assert_as_built(last)
        assert followed.searched < len(last.index.ids)


def _assert_as_built(snapshot: SearchSnapshot) -> rerank.AugmentedVectors:
    """The snapshot's augmented vectors, checked against ones built from scratch."""
    augmented = snapshot.augmented()
    assert augmented is not None
    fresh = rerank.AugmentedVectors.build(snapshot.index)
    np.testing.assert_array_equal(augmented.ids, fresh.ids)
    np.testing.assert_allclose(augmented.vectors, fresh.vectors, atol=1e-5)
    return augmented


def test_cli_search_rerank(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for i in range(4):
        make_image(folder / f"a{i}.jpg", seed=i)
    db = str(tmp_path / "c.db")
    assert main(["index", str(folder), "--db", db]) == 0
    capsys.readouterr()
    assert main(["search", str(folder / "a0.jpg"), "--db", db, "--rerank", "--json"]) == 0
    out, err = capsys.readouterr()
    line = json.loads(out)
    assert line["reranked"] is False and len(line["results"]) == 3
    assert "too few to re-rank" in err


def test_service_routes_accept_and_validate_rerank(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from lookalike.service import ServiceSettings, create_app
    from tests.conftest import SAMPLE

    db = tmp_path / "demo.db"
    with Collection.open(db) as demo:
        demo.add([SAMPLE / "collection"])
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db, roots=[SAMPLE])
    query = (SAMPLE / "queries" / "query_panda.jpg").read_bytes()
    with TestClient(create_app(settings)) as client:

        def upload(**params: object):  # type: ignore[no-untyped-def]
            return client.post(
                "/collections/demo/search", params=params, files={"file": ("q.jpg", query)}
            )

        plain = upload(k=5)
        assert plain.status_code == 200 and plain.json()["reranked"] is False
        reranked = upload(k=5, rerank="true")
        assert reranked.status_code == 200, reranked.text
        body = reranked.json()
        assert body["reranked"] is True and len(body["results"]) == 5
        assert all("/panda/" in hit["path"] for hit in body["results"][:3])
        both = upload(k=5, rerank=True, by_category=True)
        assert both.status_code in (200, 400), both.text
        for bad in ("maybe", "2", ""):
            assert upload(rerank=bad).status_code == 422
        first = body["results"][0]["id"]
        similar = client.get(f"/collections/demo/images/{first}/similar", params={"rerank": 1})
        assert similar.status_code == 200 and similar.json()["reranked"] is True
        assert first not in [hit["id"] for hit in similar.json()["results"]]
        bad = client.get(f"/collections/demo/images/{first}/similar", params={"rerank": "x"})
        assert bad.status_code == 422


def test_postgres_collection_reranks_like_a_local_one(
    photos: Path, pg_uri: str, tmp_path: Path, panda_query: Path
) -> None:
    with Collection.open(tmp_path / "c.db") as local:
        local.add([photos])
        (expected,) = local.search_detailed([panda_query], k=5, rerank=True)
    with Collection.open(pg_uri) as shared:
        shared.add([photos])
        (found,) = shared.search_detailed([panda_query], k=5, rerank=True)
    assert expected.reranked and found.reranked
    assert {Path(h.path).relative_to(photos) for h in found.results} == {
        Path(h.path).relative_to(photos) for h in expected.results
    }
