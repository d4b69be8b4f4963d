"""Refitting a PostgreSQL collection's codec while it is searched and written (issue 16): the
new codec's column and index are built beside the searched ones, searches never wait for it,
writes during it land in both, and a refit killed midway leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from lookalike.index import codec as codecs
from lookalike.store.postgres import PostgresStore
from lookalike.store.records import EmbeddedImage

ROWS = 6_000
DIMS = 64


def _vectors(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, DIMS))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _fill(store: PostgresStore, vectors: np.ndarray, prefix: str) -> None:
    for start in range(0, len(vectors), 2000):
        store.write_batch(
            [
                EmbeddedImage(f"/{prefix}/{i:06}.jpg", 1, 1, 1, 1, vectors[i])
                for i in range(start, min(start + 2000, len(vectors)))
            ],
            [],
        )


def _fit(store: PostgresStore, vectors: np.ndarray, dims: int) -> None:
    """Store a newly fitted codec (as lookalike.search.fitting does before ``reduce``)."""
    settings = {"dims": dims, "whiten": False}
    store.set_meta("pca", json.dumps(settings))
    store.put_artifact("pca", codecs.fit_codec(settings, vectors).to_bytes())


def _reduced_columns(store: PostgresStore) -> list[str]:
    return [
        str(r[0])
        for r in store._query(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'images'::regclass"
            " AND attname LIKE 'reduced%%' AND NOT attisdropped ORDER BY attname"
        )
    ]


def test_searches_and_writes_go_on_while_the_codec_is_refitted(pg_uri: str) -> None:
    vectors = _vectors(ROWS, 1)
    store = PostgresStore(pg_uri, pool_size=4)
    reader = PostgresStore(pg_uri, pool_size=2)  # another server's connections
    try:
        _fill(store, vectors, "a")
        _fit(store, vectors[:2000], 16)
        store.reduce()  # the first codec: searches use its reduced vectors
        first = store.database_index()
        assert first.reduced
        query = first.codec.transform(vectors[:1])
        _fit(store, vectors, 16)  # refitted on all of them

        done = threading.Event()
        failures: list[BaseException] = []

        def refit() -> None:
            try:
                store.reduce()
            except BaseException as exc:  # reported by the assertion below
                failures.append(exc)
            finally:
                done.set()

        written = _vectors(300, 2)
        write_times: list[float] = []

        def write() -> None:
            writer = PostgresStore(pg_uri, pool_size=1)
            try:
                for start in range(0, len(written), 20):
                    began = time.monotonic()
                    writer.write_batch(
                        [
                            EmbeddedImage(f"/b/{i:06}.jpg", 1, 1, 1, 1, written[i])
                            for i in range(start, start + 20)
                        ],
                        [],
                    )
                    write_times.append(time.monotonic() - began)
                    if done.is_set():
                        break
            finally:
                writer.close()

        threads = [threading.Thread(target=refit), threading.Thread(target=write)]
        for thread in threads:
            thread.start()
        search_times: list[float] = []
        while not done.is_set():
            began = time.monotonic()
            _, ids = reader.search(query, 10, reduced=True)
            search_times.append(time.monotonic() - began)
            assert ids[0][0] > 0
        for thread in threads:
            thread.join()
        assert not failures, failures
        # the refit took long enough for many searches, none of which waited for it
        assert len(search_times) >= 20, search_times
        assert max(search_times) < 1.0, sorted(search_times)[-5:]
        assert max(write_times) < 2.0, sorted(write_times)[-5:]

        # searches now use the new codec's column; each row (those written during the refit
        # too) holds its vector through that codec; the old column is kept until the next refit
        index = reader.database_index()
        assert index.reduced and index.column != first.column
        assert store.get_meta("pending_column") is None
        ids, raw = store.load_vectors()
        np.testing.assert_allclose(
            store.vectors_of(ids, column=index.column), index.codec.transform(raw), atol=3e-3
        )
        assert _reduced_columns(store) == sorted([first.column, index.column])
        _fit(store, vectors, 8)
        store.reduce()
        latest = store.database_index()
        assert _reduced_columns(store) == sorted([index.column, latest.column])
    finally:
        store.close()
        reader.close()


_REFIT_THEN_DIE = """
import sys, threading
from lookalike.store import postgres

def stop():
    print("stopped", flush=True)
    threading.Event().wait()  # killed here

point = sys.argv[2]
postgres._REFIT_BATCH = 500
store = postgres.PostgresStore(sys.argv[1])
calls = []
if point in ("filling", "half-filled"):
    reduce_rows = postgres._ids_and_vectors
    def counted(rows):
        calls.append(1)
        if len(calls) == (1 if point == "filling" else 2):
            stop()
        return reduce_rows(rows)
    postgres._ids_and_vectors = counted
else:
    switch = store._switch
    def stopping(column):
        if point == "switched":
            switch(column)
        stop()
    store._switch = stopping
store.reduce()
"""

#: Where a refit is killed: its column added, no row filled; half its rows filled; all filled
#: and indexed, not switched to; switched to, the input vectors' index not yet dropped.
REFIT_POINTS = ["filling", "half-filled", "built", "switched"]


@pytest.mark.parametrize("point", REFIT_POINTS)
def test_a_refit_killed_at_any_point_leaves_a_searchable_collection_and_no_orphan(
    pg_uri: str, point: str
) -> None:
    vectors = _vectors(1500, 3)
    store = PostgresStore(pg_uri, pool_size=2)
    try:
        _fill(store, vectors, "a")
        _fit(store, vectors[:1000], 16)
        store.reduce()
        before = store.database_index()
        _fit(store, vectors, 8)
    finally:
        store.close()
    child = subprocess.Popen(
        [sys.executable, "-c", _REFIT_THEN_DIE, pg_uri, point],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "stopped"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reopened = PostgresStore(pg_uri, pool_size=2)
    try:
        index = reopened.database_index()
        assert reopened.count() == 1500  # every committed row
        assert reopened.get_meta("pending_column") is None
        if point == "switched":  # the refit was done: its column is searched
            assert index.column != before.column and index.codec.dims == 8
            assert _reduced_columns(reopened) == sorted([before.column, index.column])
        else:  # searches never saw the half-made refit, whose column is gone
            assert index.column == before.column
            assert _reduced_columns(reopened) == [before.column]
            assert reopened.get_artifact("pca") is None  # fitted again at the next refresh
        hnsw = reopened._query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE %s",
            (reopened.schema, "%USING hnsw%"),
        )
        assert [r[0] for r in hnsw] == [f"images_{c}" for c in _reduced_columns(reopened)]
        _, ids = reopened.search(index.codec.transform(vectors[:1]), 5, column=index.column)
        assert ids[0][0] == 1
    finally:
        reopened.close()


def test_a_schema_1_collection_is_migrated_and_searched_as_before(pg_uri: str) -> None:
    """Schema 1 kept the reduced vectors in ``reduced`` (made with the artifact ``pca``) and
    named no searched column: opened by this version, it searches them, then refits beside."""
    vectors = _vectors(1500, 4)
    store = PostgresStore(pg_uri, pool_size=2)
    try:
        _fill(store, vectors, "a")
        _fit(store, vectors, 16)
        store.reduce()
        column = store.database_index().column
        codec = store.get_artifact(f"codec:{column}")
        with store._write() as conn:  # back to how schema 1 laid it out
            conn.execute(f"ALTER TABLE images RENAME COLUMN {column} TO reduced")  # type: ignore[call-overload]
            conn.execute(f"ALTER INDEX images_{column} RENAME TO images_reduced")  # type: ignore[call-overload]
            conn.execute("DELETE FROM meta WHERE key LIKE 'codec:%%' OR key = 'search_column'")
            conn.execute("DELETE FROM artifacts WHERE name LIKE 'codec:%%'")
            conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        assert store.get_artifact("pca") == codec
    finally:
        store.close()
    reopened = PostgresStore(pg_uri, pool_size=2)
    try:
        assert reopened.get_meta("schema_version") == "2"
        index = reopened.database_index()
        assert index.column == "reduced" and index.codec.dims == 16
        _, ids = reopened.search(index.codec.transform(vectors[:1]), 5, column=index.column)
        assert ids[0][0] == 1
        _fit(reopened, vectors, 8)
        reopened.reduce()
        assert _reduced_columns(reopened) != ["reduced"]
        assert reopened.database_index().codec.dims == 8
    finally:
        reopened.close()
