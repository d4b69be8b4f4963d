"""Files and schemas that are not lookalike collections are never changed, listed or deleted;
a collection on read-only media is searched and refuses writes (issue 16)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from lookalike import Collection, config
from lookalike.cli import main
from lookalike.errors import ReadOnlyCollection
from lookalike.service import ServiceSettings, create_app
from lookalike.store.records import NotACollection
from lookalike.store.sqlite import APPLICATION_ID, SCHEMA_VERSION, Store
from tests.conftest import SAMPLE, make_image


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign(path: Path) -> Path:
    """Another application's SQLite file that happens to have an ``images`` table."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE images (name TEXT, data BLOB)")
    db.execute("CREATE TABLE albums (title TEXT)")
    db.execute("INSERT INTO images VALUES ('cat', x'00ff')")
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("command", ["info", "search"])
def test_another_applications_sqlite_file_is_refused_unchanged(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _foreign(tmp_path / "photos.db")
    before = _digest(other)
    args = ["info", "--db", str(other)]
    if command == "search":
        args = ["search", str(SAMPLE / "queries" / "query_panda.jpg"), "--db", str(other)]
    assert main(args) == 2
    assert "not a lookalike collection" in capsys.readouterr().err
    assert _digest(other) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.db"]  # no -wal, no -shm
    with pytest.raises(NotACollection):
        Store(other)
    assert _digest(other) == before


def test_a_file_with_other_tables_only_is_refused_too(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.commit()
    db.close()
    before = _digest(other)
    with pytest.raises(NotACollection):
        Store(other)
    assert _digest(other) == before


def test_collections_of_older_versions_are_recognised_by_their_schema(tmp_path: Path) -> None:
    """A schema-1 collection (no application id: made before it) opens and is upgraded."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE images (
            id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
            indexed_at REAL NOT NULL, vector BLOB NOT NULL
        );
        CREATE TABLE skipped (
            path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        INSERT INTO images VALUES (1, '/p/a.jpg', 1, 1, 8, 8, 0, x'0000803f0000000000000000');
        """
    )
    db.commit()
    db.close()
    store = Store(path)
    try:
        assert store.count() == 1 and store.get_meta("schema_version") == str(SCHEMA_VERSION)
        # its float32 vectors are kept as they are, and read as such
        assert store.get_meta("vector_format") == "float32"
        assert store.vectors_of(np.array([1])).tolist() == [[1.0, 0.0, 0.0]]
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()


def test_a_served_folder_lists_and_deletes_only_collections(tmp_path: Path) -> None:
    folder = tmp_path / "collections"
    folder.mkdir()
    other = _foreign(folder / "holiday.db")
    before = _digest(other)
    settings = ServiceSettings(collections_dir=folder, warm_up=False)
    with TestClient(create_app(settings)) as client:
        assert client.post("/collections", json={"name": "mine"}).status_code == 201
        listed = client.get("/collections").json()
        names = [c["name"] for c in listed["collections"]]
        assert names == ["mine"]
        assert client.get("/collections/holiday").status_code == 404
        assert client.get("/collections/holiday/images").status_code == 404
        assert client.delete("/collections/holiday").status_code == 404
        assert client.post("/collections", json={"name": "holiday"}).status_code == 409
        assert client.delete("/collections/mine").status_code == 204
    assert _digest(other) == before


def test_a_foreign_postgres_schema_is_refused_untouched(pg_uri: str) -> None:
    conninfo, _, schema = pg_uri.partition("#")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.images (name text, data bytea)")
    with pytest.raises(NotACollection, match="not a lookalike collection"):
        Collection.open(pg_uri)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    assert tables == [("images",)]


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a writable folder, the same folder mounted read-only): a read-only bind mount, as
    root (chmod does not stop root); skipped where mounting is not allowed."""
    source = tmp_path / "rw"
    source.mkdir()
    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        remounted = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(target)], capture_output=True
        )
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remounted.stderr.decode().strip()}")
        yield source, target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_collection_on_a_read_only_mount_is_searched_and_refuses_writes(
    read_only_folder: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = read_only_folder
    photos = source / "photos"
    shutil.copytree(SAMPLE / "collection" / "panda", photos)
    with Collection.open(source / "c.db") as collection:
        collection.add([photos])
    db = target / "c.db"
    first = sorted(photos.iterdir())[0]
    query = str(SAMPLE / "queries" / "query_panda.jpg")
    with pytest.raises(OSError):
        (target / "probe").write_text("x")  # the mount is read-only indeed
    assert main(["search", query, "--db", str(db), "--json"]) == 0
    assert "image_" in capsys.readouterr().out
    assert main(["info", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["remove", str(first), "--db", str(db)]) == 2
    assert "read-only" in capsys.readouterr().err
    new = make_image(source / "more" / "n.jpg", seed=3)
    assert main(["index", str(new.parent), "--db", str(db)]) == 2
    assert "read-only" in capsys.readouterr().err
    with Collection.open(db) as collection, pytest.raises(ReadOnlyCollection):
        collection.store.remove([str(first)])

    settings = ServiceSettings(collections_dir=target, warm_up=False)
    with TestClient(create_app(settings)) as client:
        with open(query, "rb") as f:
            found = client.post("/collections/c/search", files={"file": ("q.jpg", f.read())})
        assert found.status_code == 200 and found.json()["results"]
        deleted = client.delete("/collections/c/images/1")
        assert deleted.status_code == 403 and "read-only" in deleted.json()["detail"]


def test_a_schema_3_collection_on_a_read_only_mount_is_searched_as_it_is(
    read_only_folder: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Schema 4 only records the vector format: a float32 collection of schema 3 that cannot
    be upgraded (read-only media) is still searched, with the answers it gave before."""
    source, target = read_only_folder
    photos = source / "photos"
    shutil.copytree(SAMPLE / "collection" / "panda", photos)
    monkeypatch.setattr(config, "SQLITE_VECTOR_FORMAT", "float32")  # as files before schema 4
    with Collection.open(source / "c.db") as collection:
        collection.add([photos])
    query = str(SAMPLE / "queries" / "query_panda.jpg")
    assert main(["search", query, "--db", str(source / "c.db"), "--json"]) == 0
    expected = capsys.readouterr().out
    with sqlite3.connect(source / "c.db") as db:  # back to schema 3: no vector_format yet
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
        db.execute("DELETE FROM meta WHERE key = 'vector_format'")
    db.close()
    assert main(["search", query, "--db", str(target / "c.db"), "--json"]) == 0
    assert capsys.readouterr().out == expected
    store = Store(target / "c.db")
    try:
        assert store.read_only and store.get_meta("schema_version") == "3"
    finally:
        store.close()
