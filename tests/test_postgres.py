"""Collections in PostgreSQL: the library, the CLI and the server on a real server, searched
in the database; several writers and servers on one collection."""

from __future__ import annotations

import io
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Collection, config
from lookalike.cli import main
from lookalike.encode.models import builtin_spec
from lookalike.service import ServiceSettings, create_app
from lookalike.store.postgres import PostgresIndex, PostgresStore, _bitmap, split_uri
from lookalike.store.records import EmbeddedImage
from tests.conftest import SAMPLE, make_image


def test_uri_names_the_collection_schema() -> None:
    assert split_uri("postgresql://u:pw@h:5/db?sslmode=disable#photos") == (
        "postgresql://u:pw@h:5/db?sslmode=disable",
        "photos",
    )
    assert split_uri("postgresql:///db?host=/run/postgresql")[1] == "lookalike"
    with pytest.raises(ValueError, match="collection name"):
        split_uri("postgresql:///db#Bad-Name")


def test_search_in_the_database_finds_what_exact_search_finds(
    photos: Path, pg_uri: str, tmp_path: Path, panda_query: Path
) -> None:
    with Collection.open(tmp_path / "c.db") as local:
        local.add([photos])
        expected = local.search(panda_query, k=10)
    with Collection.open(pg_uri) as shared:
        assert shared.add([photos]).added == 30
        assert isinstance(shared.index(), PostgresIndex)
        # the default codec (centring) is fitted: searches use the reduced vectors, whose HNSW
        # index is the only one (none on the input vectors, which no search reads)
        store = shared.store
        assert isinstance(store, PostgresStore)
        indexes = store._query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE %s",
            (store.schema, "%USING hnsw%"),
        )
        column = store.get_meta("search_column")
        assert column is not None and column.startswith("reduced_")
        assert [r[0] for r in indexes] == [f"images_{column}"]
        found = shared.search(panda_query, k=10)
        # "more like this" with an indexed file leaves the file itself out
        itself = str(photos / "panda" / "image_0002.jpg")
        similar = shared.search(itself, k=5)
    assert [Path(h.path).relative_to(photos) for h in found] == [
        Path(h.path).relative_to(photos) for h in expected
    ]
    assert [h.score for h in found] == pytest.approx([h.score for h in expected], abs=1e-4)
    assert itself not in [h.path for h in similar] and len(similar) == 5


def test_category_first_search_filters_in_the_database(
    photos: Path, pg_uri: str, tmp_path: Path
) -> None:
    """Each image's category (its label, else the classifier's guess) is in the database and
    the search filters on it: the same results as the in-memory partition of SQLite."""
    labelled = {str(p): p.parent.name for p in photos.rglob("*.jpg")}
    panda = photos / "panda" / "image_0002.jpg"
    del labelled[str(panda)]  # one unlabelled image: its category is predicted
    query = SAMPLE / "queries" / "query_panda.jpg"
    outcomes = []
    for db in (str(tmp_path / "c.db"), pg_uri):
        with Collection.open(db) as collection:
            collection.add([photos])
            collection.set_labels(labelled)
            (outcome,) = collection.search_detailed(
                [query], k=10, by_category=True, category_ranking="filter"
            )
            assert outcome.searched is not None and "panda" in outcome.searched
            assert {Path(h.path).parent.name for h in outcome.results} <= set(outcome.searched)
            assert str(panda) in [h.path for h in outcome.results]  # predicted, not labelled
            share = collection.scanned_fraction(outcome.searched)
            assert share == pytest.approx(5 * len(outcome.searched) / 30)
            expanded = collection.search_many([panda], k=5, expand=2)[0]
            assert len(expanded) == 5 and str(panda) not in [h.path for h in expanded]
            outcomes.append(outcome)
    local, shared = outcomes
    assert shared.searched == local.searched
    # the same images; locally they are ranked in the labels' LDA space, which the database
    # index does not hold (it ranks by the codec's cosine)
    assert {h.path for h in shared.results} == {h.path for h in local.results}


def _clustered_store(uri: str, *, pool_size: int = 1) -> tuple[PostgresStore, np.ndarray]:
    """3,000 rows of 32-d vectors around 30 centres (ids 1..3000, row i = id i + 1)."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(30, 32))
    vectors = centres[rng.integers(0, 30, 3000)] + 0.6 * rng.normal(size=(3000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    store = PostgresStore(uri, pool_size=pool_size)
    for start in range(0, 3000, 1000):
        store.write_batch(
            [
                EmbeddedImage(f"/v/{i:05}.jpg", 1, 1, 1, 1, vectors[i])
                for i in range(start, start + 1000)
            ],
            [],
        )
    vectors = vectors.astype(np.float16).astype(np.float32)  # as stored (halfvec)
    return store, vectors


def _exact_in(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    scores = vectors[allowed - 1] @ query
    return [int(i) for i in allowed[np.argsort(-scores, kind="stable")[:k]]]


@pytest.mark.parametrize("limit", [10**9, 0], ids=["exact-scan", "hnsw-walk"])
def test_filtered_search_in_the_database_ranks_the_filters_rows(
    pg_uri: str, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A category filter of 5 to 900 rows: both plans (every filter read and ranked exactly,
    or the HNSW index walked with the filter) return only allowed rows, best first; the exact
    scan returns exactly the exact top 10, the walk nearly (recall@10 >= 0.9)."""
    monkeypatch.setattr(config, "PG_EXACT_FILTER_ROWS", limit)
    store, vectors = _clustered_store(pg_uri)
    try:
        assert store.filter_plan(500) == ("exact" if limit else "hnsw")
        rng = np.random.default_rng(3)
        hits = total = 0
        for size in (5, 60, 300, 900):
            for _ in range(5):
                allowed = np.sort(rng.choice(np.arange(1, 3001), size, replace=False))
                query = vectors[rng.integers(0, 3000)]
                scores, ids = store.search(query[None, :], 10, allowed=allowed)
                found = [int(i) for i in ids[0] if i >= 0]
                truth = _exact_in(vectors, query, allowed, 10)
                assert len(found) == min(10, size) and set(found) <= set(allowed.tolist())
                assert list(scores[0][: len(found)]) == sorted(scores[0][: len(found)])[::-1]
                if limit:
                    assert found == truth or set(found) == set(truth)  # ties in halfvec
                hits += len(set(found) & set(truth))
                total += len(truth)
        assert hits / total >= (1.0 if limit else 0.9)
        # a query's own image is left out when asked (more like this)
        allowed = np.arange(1, 3001, 7)
        _, ids = store.search(vectors[0][None, :], 5, allowed=allowed, exclude=[1])
        assert 1 not in ids[0] and len([i for i in ids[0] if i >= 0]) == 5
    finally:
        store.close()


def test_the_walks_bitmap_holds_exactly_the_allowed_ids(pg_uri: str) -> None:
    """The HNSW walk's filter: PostgreSQL's get_bit reads back the ids the bitmap was made of."""
    ids = [1, 2, 7, 8, 9, 63, 64, 1000, 4095]
    store = PostgresStore(pg_uri)
    try:
        bitmap = _bitmap(ids)
        rows = store._query(
            "SELECT i FROM generate_series(0, %s) AS i WHERE get_bit(%s, i) = 1 ORDER BY i",
            (8 * len(bitmap) - 1, bitmap),
        )
    finally:
        store.close()
    assert [r[0] for r in rows] == ids


def test_a_filtered_walk_cut_short_falls_back_to_the_exact_scan(
    pg_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pgvector's iterative scan stops after hnsw.max_scan_tuples rows; a narrow filter it
    leaves with fewer than k results is answered by the exact scan instead."""
    store, vectors = _clustered_store(pg_uri, pool_size=1)
    try:
        with store._pool.connection() as conn:  # the only connection: the limit stays on it
            conn.execute("SET hnsw.max_scan_tuples = 40")
        allowed = np.arange(1, 3001, 50)  # 60 rows, spread over every cluster
        query = vectors[1234]
        monkeypatch.setattr(config, "PG_EXACT_FILTER_ROWS", 0)  # force the walk
        assert store.filter_plan(len(allowed)) == "hnsw"
        _, ids = store.search(query[None, :], 10, allowed=allowed)
        assert [int(i) for i in ids[0]] == _exact_in(vectors, query, allowed, 10)
    finally:
        store.close()


def test_cli_index_search_info_remove(
    photos: Path, pg_uri: str, panda_query: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", str(photos), "--db", pg_uri]) == 0
    capsys.readouterr()
    assert main(["search", str(panda_query), "--db", pg_uri, "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert "panda" in json.dumps(hits)
    assert main(["remove", str(photos / "panda"), "--db", pg_uri]) == 0
    assert main(["info", "--db", pg_uri, "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["images"] == 25
    assert "#" in info["db"] and "postgresql://" in info["db"]


@pytest.mark.parametrize(
    "command",
    [["info"], ["search", "QUERY"], ["classify", "QUERY"], ["duplicates"], ["remove", "QUERY"]],
)
def test_read_commands_on_a_misspelled_collection_create_nothing(
    postgres_server: str,
    panda_query: Path,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = f"{postgres_server}#nosuch"
    argv = [str(panda_query) if word == "QUERY" else word for word in command]
    assert main([*argv, "--db", uri]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: no collection at {uri}: create it with `lookalike index")
    with psycopg.connect(postgres_server) as conn:
        schemas = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = 'nosuch'"
        ).fetchall()
    assert schemas == []


def test_an_unreachable_server_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"postgresql://me:secret@127.0.0.1:{port}/photos#catalogue"
    for command in (["info"], ["index", str(SAMPLE / "collection")]):
        assert main([*command, "--db", uri]) == 2
        error = capsys.readouterr().err
        assert error.startswith(
            f"error: cannot reach PostgreSQL for postgresql://me:***@127.0.0.1:{port}/photos"
            "#catalogue: "
        )
        assert "secret" not in error and error.count("\n") == 1


def test_a_pca_collection_searches_its_reduced_vectors_in_the_database(
    photos: Path, pg_uri: str
) -> None:
    with Collection.open(pg_uri) as collection:
        collection.set_compression(8)
        collection.add([photos / "cup", photos / "panda"])
        collection.add([photos])  # grew by over 10%: the PCA is refitted on all 30
        index = collection.index()
        assert isinstance(index, PostgresIndex) and index.reduced
        pca = collection.pca()
        assert pca is not None and pca.fitted_on == 30
        ids, raw = collection.store.load_vectors()
        stored = collection.store.vectors_of(ids, reduced=True)  # type: ignore[union-attr]
        np.testing.assert_allclose(stored, pca.transform(raw), atol=3e-3)
        # the database's answer is the exact top 5 by the reduced vectors
        query = photos / "cup" / "image_0002.jpg"
        own_id, own_vector = collection.store.lookup(str(query))  # type: ignore[misc]
        scores = stored @ pca.transform(own_vector[None, :])[0]
        scores[ids == own_id] = -np.inf
        expected = [int(i) for i in ids[np.argsort(-scores)[:5]]]
        assert [h.id for h in collection.search(query, k=5)] == expected
        # a write between refits reduces its rows with the stored PCA, in its transaction
        new = make_image(photos / "new" / "n.jpg", seed=5)
        collection.add([new])
        assert collection.pca().fitted_on == 30  # type: ignore[union-attr]
        new_id, new_vector = collection.store.lookup(str(new))  # type: ignore[misc]
        np.testing.assert_allclose(
            collection.store.vectors_of([new_id], reduced=True),  # type: ignore[union-attr]
            pca.transform(new_vector[None, :]),
            atol=3e-3,
        )
        collection.set_compression(None)  # back to the default codec: centring, all dims
        assert collection.pca().dims == 0  # type: ignore[union-attr]
        assert collection.index().reduced  # type: ignore[union-attr]
        assert len(collection.search(query, k=5)) == 5


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def test_two_servers_see_each_others_uploads_and_deletions(
    photos: Path, pg_uri: str, tmp_path: Path
) -> None:
    """Two services (each its own connections and caches, as two processes would have) on
    one PostgreSQL collection: what one writes, the other searches and lists at once."""
    with Collection.open(pg_uri) as collection:
        collection.add([photos])
    name = split_uri(pg_uri)[1]
    shared_uploads = tmp_path / "uploads"  # servers behind one balancer share this folder
    one = ServiceSettings(collections_dir=shared_uploads, db=pg_uri)
    two = ServiceSettings(collections_dir=shared_uploads, db=pg_uri)
    with TestClient(create_app(one)) as first, TestClient(create_app(two)) as second:
        assert second.get(f"/collections/{name}/images").json()["total"] == 30
        upload = _jpeg(1)
        added = first.post(f"/collections/{name}/images", files=[("files", ("n.jpg", upload))])
        assert added.status_code == 201, added.text
        listing = second.get(f"/collections/{name}/images").json()
        assert listing["total"] == 31
        new_id = listing["items"][0]["id"]
        hits = second.post(
            f"/collections/{name}/search", files={"file": ("q.jpg", upload)}, params={"k": 1}
        ).json()["results"]
        assert hits[0]["id"] == new_id and hits[0]["score"] > 0.99
        assert second.get(f"/collections/{name}/images/{new_id}").status_code == 200
        assert second.delete(f"/collections/{name}/images/{new_id}").status_code == 204
        assert first.get(f"/collections/{name}/images").json()["total"] == 30
        hits = first.post(
            f"/collections/{name}/search", files={"file": ("q.jpg", upload)}, params={"k": 3}
        ).json()["results"]
        assert new_id not in [h["id"] for h in hits]


def test_two_indexers_on_overlapping_folders_end_with_the_union(
    pg_uri: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    root = tmp_path / "imgs"
    for i in range(24):
        make_image(root / ("a" if i < 16 else "b") / f"{i:02}.jpg", seed=i)
    (root / "a" / "bad.jpg").write_bytes(b"not an image")
    shutil.copy(root / "a" / "00.jpg", root / "b" / "copy.jpg")
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lookalike.cli",
                "index",
                str(folder),
                "--db",
                pg_uri,
                "--batch-size",
                "4",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in (root, root / "b")  # the second is inside the first
    ]
    for run in runs:
        _out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    with Collection.open(pg_uri) as collection:
        assert len(collection) == 25
        states = collection.store.file_states()
        assert len(states) == 26 and states[str(root / "a" / "bad.jpg")].skipped
        again = collection.add([root])
        assert (again.added, again.updated, again.unchanged, again.skipped_before) == (0, 0, 25, 1)


def test_a_killed_writer_loses_nothing_committed(pg_uri: str, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.test_indexing import _SLOW_INDEX

    folder = tmp_path / "imgs"
    total = 60
    for i in range(total):
        make_image(folder / f"{i:03}.jpg", seed=i)
    store = PostgresStore(pg_uri)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_INDEX, str(folder), pg_uri])
    deadline = time.monotonic() + 120
    while store.count() < 12 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = store.count()
    store.close()
    assert 12 <= done < total, "the run should have been killed part-way"
    assert done % 4 == 0  # whole batches of 4, never part of one
    with Collection.open(pg_uri) as collection:
        report = collection.add([folder])
        assert report.unchanged == done
        assert report.added == total - done
        assert len(collection) == total


def test_lookalike_serve_process_on_a_postgresql_url(
    photos: Path, pg_uri: str, tmp_path: Path
) -> None:
    """`lookalike serve --db postgresql://...` as a user starts it: the process comes up on
    the URL (not mistaken for a missing file) and answers a search from the database."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with Collection.open(pg_uri) as collection:
        collection.add([photos])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "lookalike.cli", "serve", "--db", pg_uri),
            *("--port", str(port), "--collections", str(tmp_path / "uploads")),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    name = split_uri(pg_uri)[1]
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/collections/{name}") as r:
                    assert json.load(r)["images"] == 30
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        query = sorted(photos.rglob("*.jpg"))[0].read_bytes()
        boundary = "lookalike-test"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + query
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/collections/{name}/search?k=1",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(request) as r:
            assert json.load(r)["results"][0]["score"] > 0.99
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_category_aware_search_ranks_alike_in_sqlite_and_postgresql(
    photos: Path, pg_uri: str, tmp_path: Path, panda_query: Path
) -> None:
    """--by-category ranks in the space learned from the labels in either store: the same
    images in the same order with the same scores (issue 22)."""
    answers = []
    for db in (str(tmp_path / "c.db"), pg_uri):
        assert main(["index", str(photos), "--db", db, "--categories-from-folders"]) == 0
        with Collection.open(db) as collection:
            assert collection.snapshot().projected is not None
            queries = [str(panda_query), str(photos / "chair" / "image_0004.jpg")]
            outcomes = collection.search_detailed(queries, k=5, by_category=True)
        answers.append([[(r.path, r.score) for r in outcome.results] for outcome in outcomes])
    sqlite, postgres = answers
    for want, got in zip(sqlite, postgres, strict=True):
        assert [path for path, _ in got] == [path for path, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)


def _hnsw_indexes(store: PostgresStore) -> list[tuple[str, bool]]:
    """(name, valid) of the collection's HNSW indexes."""
    rows = store._query(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_indexes x ON x.indexname = c.relname AND x.schemaname = %s"
        " WHERE c.relnamespace = %s::regnamespace AND x.indexdef LIKE %s",
        (store.schema, store.schema, "%USING hnsw%"),
    )
    return [(str(r[0]), bool(r[1])) for r in rows]


def test_a_bulk_import_into_postgresql_gives_what_sqlite_gives_and_builds_the_index_after(
    pg_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A large import loads by binary COPY without the HNSW index (a concurrent reader's
    search, an exact scan meanwhile, is right), then builds the index once."""
    from lookalike.pipeline import parquet_io
    from tests.test_parquet_io import _parts

    spec = builtin_spec("efficientnet-lite0")
    parts = tmp_path / "parts"
    vectors = _parts(parts, spec.to_json(), files=3, rows=400, seed=11)
    monkeypatch.setattr(config, "PG_BULK_LOAD_ROWS", 1000)
    monkeypatch.setattr(parquet_io, "ROWS_PER_BATCH", 200)
    assert main(["import", str(parts), "--db", str(tmp_path / "c.db"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1200

    rng = np.random.default_rng(12)
    queries = vectors[rng.choice(len(vectors), 5, replace=False)] + rng.normal(
        scale=0.02, size=(5, 1280)
    ).astype(np.float32)
    during: list[tuple[list[tuple[str, bool]], int, bool]] = []
    with Collection.open(pg_uri, model=spec) as shared, Collection.open(pg_uri) as reader:
        store = shared.store
        assert isinstance(store, PostgresStore)
        real = store.write_batch

        def write_and_look(embedded, skipped, forget=()):  # type: ignore[no-untyped-def]
            real(embedded, skipped, forget)
            seen = reader.store
            assert isinstance(seen, PostgresStore)
            ids, stored = seen.load_vectors()
            unit = queries[0] / np.linalg.norm(queries[0])
            exact = np.sort(stored @ unit)[::-1][:10]
            found = [h.score for h in reader.search(queries[0], k=10)]
            during.append((_hnsw_indexes(seen), len(ids), np.allclose(found, exact, atol=2e-3)))

        monkeypatch.setattr(store, "write_batch", write_and_look)
        report = parquet_io.import_files(shared, [parts])
        assert report.rows == 1200 and not report.failed
        monkeypatch.setattr(store, "write_batch", real)
        assert [(indexes, count) for indexes, count, _ in during] == [
            ([], 200 * n) for n in range(1, 7)
        ]
        assert all(right for _, _, right in during)
        column = store.get_meta("search_column")
        assert column is not None and column.startswith("reduced_")
        assert _hnsw_indexes(store) == [(f"images_{column}", True)]

        with Collection.open(tmp_path / "c.db") as local:
            ids, stored = store.load_vectors()
            local_ids, local_stored = local.store.load_vectors()
            paths = store.paths(ids)
            local_paths = local.store.paths(local_ids)
            assert sorted(paths.values()) == sorted(local_paths.values())
            by_path = {local_paths[int(i)]: v for i, v in zip(local_ids, local_stored, strict=True)}
            assert np.allclose(
                stored, np.stack([by_path[paths[int(i)]] for i in ids]), atol=1e-3
            )  # halfvec: float16
            for query in queries:  # the same answers, to float16's precision
                found = shared.search(query, k=10)
                expected = local.search(query, k=10)
                assert found[0].path == expected[0].path
                assert len({h.path for h in found} & {h.path for h in expected}) >= 9
                assert np.allclose([h.score for h in found], [h.score for h in expected], atol=3e-3)
    # an import smaller than the collection keeps the index live (and, at under 10% more
    # rows, the codec: no refit makes a column of its own)
    more = tmp_path / "more"
    _parts(more, spec.to_json(), files=1, rows=100, seed=13, name="more")
    assert main(["import", str(more), "--db", pg_uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1300
    with Collection.open(pg_uri) as shared:
        assert isinstance(shared.store, PostgresStore)
        assert _hnsw_indexes(shared.store) == [(f"images_{column}", True)]


def test_a_bulk_imports_codec_refit_fills_its_column_with_no_hnsw_index_to_feed(
    pg_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk import large enough for approximate search gets PCA at its settling: a refit
    of the codec not fitted yet (searching the input vectors), then the refit that fills the
    reduced column. Every row the fill updates moves, so it would add an entry to every
    index on the table: the first refit must not build the input vectors' HNSW index that
    the bulk load deferred (at 100,000 rows the fill went 500 times slower feeding it)."""
    from lookalike.pipeline import parquet_io
    from tests.test_parquet_io import _parts

    spec = builtin_spec("efficientnet-lite0")
    parts = tmp_path / "parts"
    _parts(parts, spec.to_json(), files=2, rows=300, seed=21)
    monkeypatch.setattr(config, "PG_BULK_LOAD_ROWS", 500)
    monkeypatch.setattr(config, "ANN_MIN_IMAGES", 500)
    with Collection.open(pg_uri, model=spec) as shared:
        store = shared.store
        assert isinstance(store, PostgresStore)
        real = store.reduce
        seen: list[tuple[str | None, list[tuple[str, bool]]]] = []

        def reduce_and_look() -> None:
            real()
            seen.append((store.get_meta("search_column"), _hnsw_indexes(store)))

        monkeypatch.setattr(store, "reduce", reduce_and_look)
        report = parquet_io.import_files(shared, [parts])
        assert report.rows == 600 and not report.failed
        column = store.get_meta("search_column")
        assert column is not None and column.startswith("reduced_")
        # the codec not fitted yet (input vectors searched, no index yet), then PCA's column
        assert seen == [("vector", []), (column, [(f"images_{column}", True)])]
        assert json.loads(store.get_meta("pca") or "{}")["dims"] == config.PCA_DIMS
        assert _hnsw_indexes(store) == [(f"images_{column}", True)]
