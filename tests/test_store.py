"""The SQLite store: change feed, schema upgrades, file names that are not UTF-8, bad files."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike import config
from lookalike.store import sqlite as store_module
from lookalike.store.records import EmbeddedImage, SkippedFile, StoreError
from lookalike.store.sqlite import SCHEMA_VERSION, Store


def _image(path: str, value: float) -> EmbeddedImage:
    return EmbeddedImage(path, 10, 20, 4, 3, np.full(8, value, dtype=np.float32))


def test_change_feed_survives_a_clock_that_steps_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "c.db")
    monkeypatch.setattr(store_module.time, "time", lambda: 2_000_000_000.0)
    store.write_batch([_image("/a.jpg", 1.0)], [])
    first = store.vectors_since(None)
    assert len(first.ids) == 1
    monkeypatch.setattr(store_module.time, "time", lambda: 1_000_000_000.0)  # NTP step back
    store.write_batch([_image("/b.jpg", 2.0)], [])
    second = store.vectors_since(first.latest)
    assert second.latest > first.latest
    assert second.vectors is not None
    assert second.vectors[:, 0].tolist() == [2.0]
    assert second.all_ids is None  # nothing removed: what was held and the new row
    assert store.vectors_since(second.latest).ids.size == 0


def test_a_cursor_number_is_never_handed_out_twice(tmp_path: Path) -> None:
    """Deleting the newest rows must not let the next write reuse their number."""
    store = Store(tmp_path / "c.db")
    store.write_batch([_image("/a.jpg", 1.0)], [])
    store.write_batch([_image("/b.jpg", 2.0)], [])
    cursor = store.vectors_since(None).latest
    store.remove(["/b.jpg"])
    store.write_batch([_image("/c.jpg", 3.0)], [])
    changes = store.vectors_since(cursor)
    assert changes.vectors is not None and changes.vectors[:, 0].tolist() == [3.0]
    assert len(changes.all_ids) == 2


def test_empty_store_feed(tmp_path: Path) -> None:
    changes = Store(tmp_path / "c.db").vectors_since(None)
    assert changes.ids.size == 0 and changes.vectors is None and changes.latest == 0


_V2_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    indexed_at REAL NOT NULL, vector BLOB NOT NULL, box TEXT, cluster INTEGER
);
CREATE INDEX images_cluster ON images (cluster);
CREATE INDEX images_indexed_at ON images (indexed_at);
CREATE TABLE labels (path TEXT PRIMARY KEY, category TEXT NOT NULL);
CREATE TABLE artifacts (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE skipped (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '2'), ('generation', '7'), ('model', '{}');
INSERT INTO labels VALUES ('/old/a.jpg', 'cats');
INSERT INTO skipped VALUES ('/old/bad.jpg', 5, 6, 'not a recognised image');
"""


def _make_v2(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(_V2_SCHEMA)
        # A future timestamp: the old feed would hide any row written "before" it.
        for i, name in enumerate(["a", "b"]):
            db.execute(
                "INSERT INTO images (path, size, mtime_ns, width, height, indexed_at, vector,"
                " box, cluster) VALUES (?, 1, 2, 3, 4, ?, ?, NULL, 0)",
                (f"/old/{name}.jpg", 4e9 + i, np.full(8, i, dtype="<f4").tobytes()),
            )
    assert db is not None


def test_a_v2_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _make_v2(path)
    store = Store(path)
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert store.generation() == 7
    assert store.count() == 2
    assert store.category_counts() == {"cats": 1}
    assert [s.path for s in store.skipped_files()] == ["/old/bad.jpg"]
    everything = store.vectors_since(None)
    assert everything.vectors is not None and everything.vectors[:, 0].tolist() == [0.0, 1.0]
    store.write_batch([_image("/new/c.jpg", 5.0)], [])
    newer = store.vectors_since(everything.latest)
    assert newer.vectors is not None and newer.vectors[:, 0].tolist() == [5.0]
    store.close()
    reopened = Store(path)  # a second open finds it current and changes nothing
    assert reopened.count() == 3
    assert reopened.vectors_since(newer.latest).ids.size == 0


def _blob_lengths(path: Path) -> set[int]:
    with sqlite3.connect(path) as db:
        lengths = {int(r[0]) for r in db.execute("SELECT length(vector) FROM images")}
    db.close()
    return lengths


def test_a_new_collection_stores_float16_and_reads_float32_everywhere(tmp_path: Path) -> None:
    """2 bytes a dimension (Lite0's 1280: 2,560 bytes an image, not 5,120), read back as the
    float16 rounding of what was written (PostgreSQL's halfvec) by every read."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 1280)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rounded = vectors.astype(np.float16).astype(np.float32)
    photo = tmp_path / "p0.jpg"
    photo.write_bytes(b"0123")
    stat = photo.stat()
    store = Store(tmp_path / "c.db")
    store.write_batch(
        [
            EmbeddedImage(str(tmp_path / f"p{i}.jpg"), stat.st_size, stat.st_mtime_ns, 4, 3, v)
            for i, v in enumerate(vectors)
        ],
        [],
    )
    assert store.get_meta("vector_format") == "float16"
    assert _blob_lengths(tmp_path / "c.db") == {2 * 1280}
    ids, loaded = store.load_vectors()
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, rounded)
    np.testing.assert_array_equal(store.vectors_of(ids[::-1]), rounded[::-1])
    np.testing.assert_array_equal(store.vectors_present(ids[:2])[1], rounded[:2])
    np.testing.assert_array_equal(store.sample_vectors(10), rounded)
    batches = list(store.vector_batches(2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), rounded)
    changes = store.vectors_since(None)
    assert changes.vectors is not None
    np.testing.assert_array_equal(changes.vectors, rounded)
    found = store.lookup(str(photo))
    assert found is not None and found[1].dtype == np.float32
    np.testing.assert_array_equal(found[1], rounded[0])
    store.close()


def test_a_new_collection_takes_under_3_kb_an_image_with_lite0_vectors(tmp_path: Path) -> None:
    """1,280 float16 dimensions and a row: under 3,000 bytes an image on disk (float32 in
    4 KiB pages took 5,574; float16 in 4 KiB pages, a page a row, 4,214)."""
    rows = 400
    vectors = np.random.default_rng(1).normal(size=(2 * rows, 1280)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = tmp_path / "c.db"
    sizes = []
    for start in (0, rows):  # the bytes the second 400 images add (not the empty tables')
        store = Store(path)
        store.write_batch(
            [
                EmbeddedImage(f"/home/someone/Pictures/2024/IMG_{i:06d}.jpg", 1, 2, 3, 4, v)
                for i, v in enumerate(vectors[start : start + rows], start)
            ],
            [],
        )
        store.close()  # the last connection: the WAL is checkpointed into the file
        sizes.append(path.stat().st_size)
    assert (sizes[1] - sizes[0]) / rows < 3000


def test_an_upgraded_float32_collection_stays_float32(tmp_path: Path) -> None:
    """A file made before schema 4 is not rewritten: its vectors read back exactly, and new
    ones are stored as float32 too (one format a file)."""
    path = tmp_path / "v2.db"
    _make_v2(path)
    store = Store(path)
    assert store.get_meta("vector_format") == "float32"
    precise = np.full(8, 0.1, dtype=np.float32)  # not a float16 number
    store.write_batch([EmbeddedImage("/new/c.jpg", 1, 2, 3, 4, precise)], [])
    assert _blob_lengths(path) == {4 * 8}
    np.testing.assert_array_equal(store.load_vectors()[1][2], precise)
    store.close()


def test_a_vector_beyond_float16_is_refused_not_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    assert store.get_meta("vector_format") == "float16"
    huge = np.full(8, 1e6, dtype=np.float32)  # never an L2-normalised vector: inf in float16
    with pytest.raises(StoreError, match="float16"):
        store.write_batch([_image("/a.jpg", 0.5), EmbeddedImage("/b.jpg", 1, 2, 3, 4, huge)], [])
    assert store.count() == 0  # the batch is one transaction
    store.close()


def test_an_unknown_vector_format_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "c.db").set_meta("vector_format", "bfloat8")
    with pytest.raises(StoreError, match="bfloat8"):
        Store(tmp_path / "c.db")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "c.db").set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "c.db")


def test_names_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    name = os.fsdecode(b"/photos/bad\xff.jpg")  # "bad\udcff.jpg"
    other = os.fsdecode(b"/photos/caf\xe9/x.jpg")
    store = Store(tmp_path / "c.db")
    store.write_batch(
        [_image(name, 1.0), _image("/photos/good.jpg", 2.0)],
        [SkippedFile(other, 1, 2, "truncated")],
    )
    states = store.file_states()
    assert set(states) == {name, other, "/photos/good.jpg"}
    assert set(store.file_states("/photos")) == set(states)
    assert set(store.file_states(os.fsdecode(b"/photos/caf\xe9"))) == {other}
    assert store.file_states("/photo") == {} and store.file_states("/photos/bad") == {}
    assert [s.path for s in store.skipped_files()] == [other]
    ids = store.vectors_since(None).ids
    assert sorted(store.paths(ids).values()) == sorted([name, "/photos/good.jpg"])
    store.set_labels({name: "odd"})
    assert store.category_counts() == {"odd": 1}
    assert store.remove([name, other]) == 1
    assert set(store.file_states()) == {"/photos/good.jpg"}


def test_lookup_of_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/bad\xff.jpg"
    with open(raw, "wb") as file:
        file.write(b"x" * 10)
    path = os.fsdecode(raw)
    stat = os.stat(raw)
    store = Store(tmp_path / "c.db")
    vector = np.ones(8, dtype=np.float32)
    store.write_batch([EmbeddedImage(path, stat.st_size, stat.st_mtime_ns, 1, 1, vector)], [])
    found = store.lookup(path)
    assert found is not None and found[1].tolist() == vector.tolist()
    assert store.lookup("/nowhere/\ud800.jpg") is None  # not even a possible name


@pytest.mark.parametrize("kind", ["jpeg", "folder", "garbage", "damaged"])
def test_a_file_that_is_no_collection_raises_store_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c.db"
    if kind == "jpeg":
        path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 2000)
    elif kind == "folder":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(os.urandom(8192))
    else:
        store = Store(path)
        store.write_batch([_image(f"/{i}.jpg", i) for i in range(200)], [])
        store.close()
        data = bytearray(path.read_bytes())
        data[100:4096] = os.urandom(4096 - 100)  # the header's tail and the schema page
        path.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        Store(path)


def test_the_change_feed_lists_every_id_only_after_a_removal(tmp_path: Path) -> None:
    """Following the store costs the rows changed, not a read of every id (a million rows:
    a quarter of a second per change), unless images were removed since the cursor."""
    store = Store(tmp_path / "c.db")
    store.write_batch([_image(f"/p/{i}.jpg", float(i)) for i in range(4)], [])
    first = store.vectors_since(None)
    assert first.all_ids is not None and list(first.all_ids) == list(first.ids)
    store.write_batch([_image("/p/new.jpg", 9.0)], [])
    added = store.vectors_since(first.latest)
    assert added.all_ids is None and len(added.ids) == 1
    store.remove(["/p/0.jpg"])
    removed = store.vectors_since(added.latest)
    assert removed.all_ids is not None and len(removed.all_ids) == 4
    assert store.vectors_since(removed.latest).all_ids is None
    # a file that became unreadable (recorded as skipped) and a forgotten one are removals too
    store.write_batch([], [SkippedFile("/p/1.jpg", 1, 1, "truncated")])
    skipped = store.vectors_since(removed.latest)
    assert skipped.all_ids is not None and len(skipped.all_ids) == 3
    store.write_batch([], [], forget=["/p/2.jpg"])
    forgotten = store.vectors_since(skipped.latest)
    assert forgotten.all_ids is not None and len(forgotten.all_ids) == 2


def test_a_read_on_another_thread_proceeds_while_a_write_transaction_is_open(
    tmp_path: Path,
) -> None:
    """Readers do not wait for the writer: each thread reads through its own connection,
    which sees the last committed state while a write transaction is open."""
    store = Store(tmp_path / "c.db")
    vector = np.ones(4, dtype=np.float32) / 2
    store.write_batch([EmbeddedImage("/a/1.jpg", 1, 1, 2, 2, vector)], [])
    store.set_labels({"/a/1.jpg": "cat"})
    inside, release = threading.Event(), threading.Event()

    def slow_batch() -> Iterator[EmbeddedImage]:
        yield EmbeddedImage("/a/2.jpg", 1, 1, 2, 2, vector)
        inside.set()  # the transaction is open, one row written, not committed
        assert release.wait(30)

    writer = threading.Thread(target=lambda: store.write_batch(slow_batch(), []))
    writer.start()
    assert inside.wait(10)
    seen: dict[str, object] = {}

    def read() -> None:
        seen["count"] = store.count()
        seen["paths"] = sorted(store.file_states())
        seen["vectors"] = len(store.load_vectors()[0])
        seen["changes"] = len(store.vectors_since(None).ids)
        seen["labels"] = store.category_counts()

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(5)
    finished_while_writing = not reader.is_alive()
    release.set()
    writer.join(10)
    reader.join(10)
    assert finished_while_writing, "the read waited for the write transaction"
    # The last committed state: not the row of the open transaction.
    assert seen == {
        "count": 1,
        "paths": ["/a/1.jpg"],
        "vectors": 1,
        "changes": 1,
        "labels": {"cat": 1},
    }
    assert store.count() == 2  # and the write committed
    store.close()


def test_read_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")

    def open_files() -> int:
        """Descriptors of the collection file held by this process (SQLite keeps a closed
        connection's descriptor while other connections to the file hold locks)."""
        fds = Path("/proc/self/fd")
        found = 0
        for fd in fds.iterdir():
            try:
                found += os.readlink(fd) == str(tmp_path / "c.db")
            except OSError:
                continue
        return found

    def read_on_threads(n: int) -> None:
        for _ in range(n):  # short-lived threads, each reading once
            thread = threading.Thread(target=store.count)
            thread.start()
            thread.join()

    read_on_threads(5)
    after_a_few = open_files()
    read_on_threads(30)
    assert open_files() == after_a_few  # one connection per live thread, not per thread ever
    store.close()
    assert open_files() == 0


def test_a_reader_never_recreates_a_deleted_collection(tmp_path: Path) -> None:
    """A thread whose first read comes after the collection's file was deleted (a server
    deleting a collection during requests) gets an error, and no empty database appears."""
    path = tmp_path / "doomed.db"
    store = store_module.Store(path)
    store.set_meta("kept", "1")
    errors: list[BaseException] = []

    def first_read_on_a_new_thread() -> None:
        try:
            store.get_meta("kept")
        except (sqlite3.Error, StoreError) as exc:
            errors.append(exc)

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    reader = threading.Thread(target=first_read_on_a_new_thread)
    reader.start()
    reader.join()
    assert len(errors) == 1 and not path.exists()
    store.close()  # then closed: a new reader is refused too
    reader = threading.Thread(target=first_read_on_a_new_thread)
    reader.start()
    reader.join()
    assert len(errors) == 2 and not path.exists()


def test_a_new_collection_has_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """16 KB pages hold whole 1280-d rows (4 KB pages spill each into overflow pages: bulk
    writes ran at 3/4 of the speed); a file made with other pages is opened as it is."""
    new = Store(tmp_path / "new.db")
    new.write_batch([_image("/a.jpg", 1.0)], [])
    assert new._db.execute("PRAGMA page_size").fetchone()[0] == config.SQLITE_PAGE_SIZE == 16384
    new.close()
    old = tmp_path / "old.db"
    Store(old).close()
    with sqlite3.connect(old) as db:  # an older collection: 4 KB pages, the SQLite default
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA page_size = 4096")
        db.execute("VACUUM")
        db.execute("PRAGMA journal_mode=WAL")
    db.close()
    reopened = Store(old)
    reopened.write_batch([_image("/b.jpg", 2.0)], [])
    assert reopened._db.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert reopened.count() == 1
    reopened.close()
