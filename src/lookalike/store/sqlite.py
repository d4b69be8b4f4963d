"""The embedded store: one SQLite file (WAL mode) holding image metadata and vectors.

Every write is one transaction, so a killed process leaves the file as it was after the
last committed batch. Files that could not be decoded are remembered too (with their size,
mtime and reason), so an unchanged bad file is not decoded again on the next run.

Tables: ``images`` (one row per indexed file: size, mtime, vector, object box, cluster, and
the change sequence number of the write that stored it), ``skipped`` (bad files and why),
``labels`` (user-given categories by path, kept even for files not indexed yet) and ``meta``
(model spec, fitted classifier and PCA, counters).

Paths are stored as text when the name is valid UTF-8, else as the raw bytes of the name
(a BLOB), so that a name from another locale (``bad\\xff.jpg``) round-trips exactly to the
file on disk; :func:`_db_path` and :func:`_path_from_db` are the only conversions.

Older files are upgraded in place, one schema version at a time (:data:`_MIGRATIONS`).

Vectors are stored in the format meta ``vector_format`` names (:data:`VECTOR_DTYPES`), set
when the file is made and never changed after: float16 for files made since schema 4
(:data:`lookalike.config.SQLITE_VECTOR_FORMAT`; 2 bytes a dimension, PostgreSQL's
``halfvec`` rounding), float32 for files made before, which the upgrade to schema 4 leaves as
they are. :func:`vector_blob` and :func:`vectors_from_blobs` are the only conversions; every
read returns float32.

A collection file carries ``PRAGMA application_id`` :data:`APPLICATION_ID`; one made before
that is recognised by its exact schema (:func:`recognise`). Any other file is refused before
anything is written to it: another application's database is never changed. A collection on
read-only media (a read-only mount, a file or folder that cannot be written) is opened
read-only: searched as usual, every write refused with :class:`ReadOnlyCollection`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lookalike import config
from lookalike.errors import ReadOnlyCollection
from lookalike.store.records import (
    EmbeddedImage,
    FileState,
    ImageRecord,
    NotACollection,
    SkippedFile,
    StoreError,
    VectorChanges,
)
from lookalike.store.sql import (
    LABELS_GENERATION,
    box_text,
    parse_box,
    sample_ids,
    unchanged_on_disk,
)
from lookalike.store.sql import SQLITE as SQL

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
#: The oldest schema a file on read-only media is searched in as it is: schema 4 only adds
#: meta ``vector_format``, whose absence means float32, the only format before it.
_READABLE_FROM = 3
#: Meta key naming how the file stores vectors: a key of :data:`VECTOR_DTYPES`.
VECTOR_FORMAT = "vector_format"
#: Stored vector formats: little-endian float32 (4 bytes a dimension, every file before
#: schema 4) and float16 (2 bytes, the format of new files).
VECTOR_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
#: ``PRAGMA application_id`` of a collection file: "LOOK".
APPLICATION_ID = 0x4C4F4F4B
#: The tables of every schema version, and the columns of ``images`` in versions 1, 2, 3 (and
#: 4, whose tables are 3's):
#: a file without the application id is a collection only if its schema is one of these.
_TABLES = frozenset({"meta", "images", "labels", "artifacts", "skipped"})
_V1_COLUMNS = frozenset(
    {"id", "path", "size", "mtime_ns", "width", "height", "indexed_at", "vector"}
)
_IMAGE_COLUMNS = (
    _V1_COLUMNS,
    _V1_COLUMNS | {"box", "cluster"},
    _V1_COLUMNS | {"box", "cluster", "seq"},
)

#: The current schema, for new files; existing ones are brought to it by _MIGRATIONS.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    indexed_at REAL NOT NULL,
    vector BLOB NOT NULL,
    box TEXT,
    cluster INTEGER,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS images_cluster ON images (cluster);
CREATE INDEX IF NOT EXISTS images_seq ON images (seq);
CREATE TABLE IF NOT EXISTS labels (path TEXT PRIMARY KEY, category TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""


class _ThreadReader(threading.local):
    """The read connection of one thread (None until it first reads)."""

    db: sqlite3.Connection | None = None


class Store:
    """SQLite-backed metadata and vector store of one collection.

    One writer connection, whose lock keeps each write transaction whole, and a read
    connection per thread (as datasette does): in WAL mode a reader reads the last committed
    state while a write transaction is open, so searches never wait for an indexing batch.
    A thread inside a write transaction reads through the writer connection (it sees its
    own uncommitted writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(
                f"{self.path} is a folder, not a collection file: to search its images, index "
                f"them (`lookalike index {self.path}`, into the default collection, or with "
                f"--db {self.path / 'lookalike.db'})"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # the writer connection's
        self._writing: int | None = None  # the thread in a write transaction, if any
        self._reader = _ThreadReader()
        #: Every read connection opened, with its thread (closed with the store, or when a
        #: new one is opened after its thread ended).
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._count: tuple[int, int] | None = None  # (generation, images), see count()
        #: On read-only media: searched, never written (writes raise ReadOnlyCollection).
        self.read_only = self.path.exists() and _on_read_only_media(self.path)
        try:
            self._db = _connect(self.path, read_only=self.read_only)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA busy_timeout=10000")
            kind = recognise(self._db)  # before anything is written
            if kind == "foreign":
                raise NotACollection(
                    f"{self.path} is not a lookalike collection (another application's"
                    " database?): left as it is"
                )
            if self.read_only:
                self._check_readable(kind)
            else:
                if kind == "empty":  # a new file: its page size is chosen before anything
                    self._db.execute(f"PRAGMA page_size = {config.SQLITE_PAGE_SIZE}")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._create_or_migrate()
                self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            #: How this file stores vectors (fixed when it was made).
            self.vector_dtype = self._stored_vector_dtype()
        except BaseException as exc:
            self.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(
                    f"{self.path} is not a lookalike collection or is damaged: {exc}"
                ) from exc
            raise

    def _check_readable(self, kind: str) -> None:
        """A read-only file can be searched only as it is: a collection of this schema."""
        if kind == "empty":
            raise NotACollection(f"{self.path} is empty and read-only: not a collection")
        version = self._schema_version()
        if not _READABLE_FROM <= version <= SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version} and is read-only: this lookalike reads"
                f" schemas {_READABLE_FROM} to {SCHEMA_VERSION} (open it once where it can be"
                " written to upgrade it)"
            )
        log.info("%s is on read-only media: opened read-only", self.path)

    def _refuse_writes(self) -> None:
        if self.read_only:
            raise ReadOnlyCollection(
                f"{self.path} is read-only (a read-only mount or file): it can be searched,"
                " not changed"
            )

    def _create_or_migrate(self) -> None:
        """Create the current schema in a new file, or upgrade an older one step by step."""
        with self._transaction():
            exists = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'images'"
            ).fetchone()
            if not exists:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self.set_meta("schema_version", str(SCHEMA_VERSION))
                self.set_meta(VECTOR_FORMAT, config.SQLITE_VECTOR_FORMAT)
                return
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}, made by a newer lookalike "
                f"(this one reads up to {SCHEMA_VERSION})"
            )
        while version < SCHEMA_VERSION:
            with self._transaction():
                _MIGRATIONS[version](self._db)
                version += 1
                self.set_meta("schema_version", str(version))
            log.info("%s upgraded to schema %d", self.path, version)

    def _stored_vector_dtype(self) -> np.dtype[Any]:
        name = self.get_meta(VECTOR_FORMAT) or "float32"  # schema 3 (read-only): float32
        if name not in VECTOR_DTYPES:
            raise StoreError(f"{self.path} stores vectors as {name!r}, unknown to this lookalike")
        return VECTOR_DTYPES[name]

    def _schema_version(self) -> int:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        value = self.get_meta("schema_version") if has_meta else None
        return int(value) if value is not None else 1

    def close(self) -> None:
        with self._lock, self._readers_lock:
            self._closed = True
            for _, reader in self._readers:
                reader.close()
            self._readers.clear()
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._refuse_writes()
        with self._lock:
            outer = self._writing
            self._db.execute("BEGIN IMMEDIATE")
            self._writing = threading.get_ident()
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._writing = outer

    def _read_connection(self) -> sqlite3.Connection:
        """This thread's read connection (the writer's inside its write transaction)."""
        if self._writing == threading.get_ident():
            return self._db
        reader = self._reader.db
        if reader is None:
            reader = self._reader.db = self._open_reader()
        return reader

    def _open_reader(self) -> sqlite3.Connection:
        # Never creates the file: a collection deleted (or closed) under a thread that had no
        # read connection yet must not come back as an empty database.
        reader = _connect(self.path, read_only=self.read_only, create=False)
        reader.execute("PRAGMA busy_timeout=10000")
        with self._readers_lock:
            if self._closed:
                reader.close()
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            ended = [(t, c) for t, c in self._readers if not t.is_alive()]
            for entry in ended:
                entry[1].close()
                self._readers.remove(entry)
            self._readers.append((threading.current_thread(), reader))
        return reader

    def _query(self, sql: str, args: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        """A read, on this thread's read connection."""
        return self._read_connection().execute(sql, tuple(args)).fetchall()

    def _execute(self, sql: str, args: Iterable[object] = ()) -> None:
        """One write statement (its own transaction unless inside :meth:`_transaction`)."""
        with self._lock:
            self._db.execute(sql, tuple(args))

    # --- metadata ------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query(SQL.get_meta, (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._refuse_writes()
        self._execute(SQL.set_meta, (key, value))

    def put_artifact(self, name: str, data: bytes | None) -> None:
        """Save (or with None, delete) a fitted model: classifier, PCA."""
        with self._transaction():
            if data is None:
                self._db.execute(SQL.delete_artifact, (name,))
            else:
                self._db.execute(SQL.put_artifact, (name, data))

    def get_artifact(self, name: str) -> bytes | None:
        rows = self._query(SQL.get_artifact, (name,))
        return bytes(rows[0][0]) if rows else None

    def generation(self) -> int:
        """A number that changes whenever the set of vectors changes."""
        return int(self.get_meta("generation") or 0)

    def _bump_generation(self) -> None:
        self.set_meta("generation", str(self.generation() + 1))

    # --- files -----------------------------------------------------------------------------

    def file_states(self, under: str | None = None) -> dict[str, FileState]:
        """Known files (indexed or skipped), optionally only those below folder ``under``."""
        prefix = None if under is None else under.rstrip("/") + "/"
        text_prefix = None if prefix is None else _db_path(prefix)
        states: dict[str, FileState] = {}
        for table, skipped in (("images", False), ("skipped", True)):
            if prefix is None:
                rows = self._query(f"SELECT path, size, mtime_ns FROM {table}")
            else:
                rows = []
                if isinstance(text_prefix, str):
                    # A range on the unique index instead of LIKE, which would need escaping
                    # of % and _ in folder names.
                    rows = self._query(
                        f"SELECT path, size, mtime_ns FROM {table} WHERE path >= ? AND path < ?",
                        (text_prefix, text_prefix[:-1] + "0"),
                    )
                # Names stored as bytes (not UTF-8) sort after all text, by their bytes: the
                # same range of the index, in bytes.
                raw = text_prefix if isinstance(text_prefix, bytes) else str(text_prefix).encode()
                rows += self._query(
                    f"SELECT path, size, mtime_ns FROM {table} WHERE path >= ? AND path < ?",
                    (raw, raw[:-1] + b"0"),
                )
            for raw, size, mtime in rows:
                path = _path_from_db(raw)
                if prefix is None or path.startswith(prefix):
                    states[path] = FileState(size, mtime, skipped=skipped)
        return states

    def write_batch(
        self,
        embedded: Iterable[EmbeddedImage],
        skipped: Iterable[SkippedFile],
        forget: Iterable[str] = (),
    ) -> None:
        """Insert or replace a batch of results in one transaction; ``forget``: files whose
        earlier record (vector or skip) no longer holds and that are not recorded anew."""
        images = list(embedded)
        bad = list(skipped)
        with self._transaction():
            removed = 0
            for path in map(_db_path, forget):
                removed += self._db.execute("DELETE FROM images WHERE path = ?", (path,)).rowcount
                self._db.execute("DELETE FROM skipped WHERE path = ?", (path,))
            now = time.time()  # informational only: the change feed follows ``seq``
            seq = self._next_seq()
            rows = [
                (
                    _db_path(image.path),
                    image.size,
                    image.mtime_ns,
                    image.width,
                    image.height,
                    now,
                    vector_blob(image.vector, self.vector_dtype),
                    box_text(image.box),
                    seq,
                )
                for image in images
            ]
            if rows and self._db.execute("SELECT 1 FROM skipped LIMIT 1").fetchone():
                # (a bulk import into a collection without bad files skips this lookup)
                self._db.executemany(
                    "DELETE FROM skipped WHERE path = ?", [(row[0],) for row in rows]
                )
            self._db.executemany(
                "INSERT INTO images"
                " (path, size, mtime_ns, width, height, indexed_at, vector, box, seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET"
                " size = excluded.size, mtime_ns = excluded.mtime_ns,"
                " width = excluded.width, height = excluded.height,"
                " indexed_at = excluded.indexed_at, vector = excluded.vector,"
                " box = excluded.box, cluster = NULL, seq = excluded.seq",
                rows,
            )
            for failed in bad:
                path = _db_path(failed.path)
                removed += self._db.execute("DELETE FROM images WHERE path = ?", (path,)).rowcount
                self._db.execute(
                    "INSERT OR REPLACE INTO skipped (path, size, mtime_ns, reason)"
                    " VALUES (?, ?, ?, ?)",
                    (path, failed.size, failed.mtime_ns, failed.reason),
                )
            if removed:
                self._note_removal(seq)
            self._bump_generation()

    @contextmanager
    def bulk_load(self, rows: int) -> Iterator[None]:
        """Nothing to defer: the store keeps no search index of its own (an approximate index
        beside it follows the change feed, see :mod:`lookalike.index.persistent`)."""
        yield

    def _note_removal(self, seq: int) -> None:
        """Images were removed in change ``seq``: readers behind it need every id again
        (see :meth:`vectors_since`)."""
        self.set_meta("removed_seq", str(seq))

    def _next_seq(self) -> int:
        """The next number of the change sequence (call inside a transaction).

        A counter in ``meta`` rather than MAX(seq) + 1, which would hand out a number
        again once the rows that carried it are deleted; never the clock, which can step
        back."""
        seq = int(self.get_meta("change_seq") or 0) + 1
        self.set_meta("change_seq", str(seq))
        return seq

    def remove(self, paths: Iterable[str]) -> int:
        """Forget these files; returns how many indexed images were removed."""
        removed = 0
        with self._transaction():
            for path in map(_db_path, paths):
                removed += self._db.execute("DELETE FROM images WHERE path = ?", (path,)).rowcount
                self._db.execute("DELETE FROM skipped WHERE path = ?", (path,))
            if removed:
                self._note_removal(self._next_seq())
            self._bump_generation()
        return removed

    def skipped_files(self) -> list[SkippedFile]:
        rows = self._query(SQL.skipped_files)
        return [SkippedFile(_path_from_db(row[0]), *row[1:]) for row in rows]

    # --- vectors ---------------------------------------------------------------------------

    def count(self) -> int:
        """Indexed images. Cached per generation: ``COUNT(*)`` walks a whole index (5 ms at a
        million images), and every search asks; the generation is read first, so a count
        is never cached under a generation newer than itself."""
        generation = self.generation()
        cached = self._count
        if cached is not None and cached[0] == generation:
            return cached[1]
        count = int(self._query(SQL.count)[0][0])
        self._count = (generation, count)
        return count

    def load_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All ids (int64, ascending) and vectors (float32, N x D)."""
        rows = self._query(SQL.all_vectors)
        ids, vectors = self._ids_and_vectors(rows)
        return ids, np.empty((0, 0), dtype=np.float32) if vectors is None else vectors

    def cursor(self) -> int:
        """The change cursor as of now: :meth:`vectors_since` of it returns no row until
        something is written (a whole-collection scan taken after it misses nothing)."""
        return int(self.get_meta("change_seq") or 0)

    def vector_batches(
        self, batch_size: int = config.SCAN_BATCH
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (ids, vectors) in id order, ``batch_size`` rows at a time: whole-collection
        jobs at millions of images never hold every vector at once."""
        last = -1
        while True:
            rows = self._query(SQL.vector_batch, (last, batch_size))
            ids, vectors = self._ids_and_vectors(rows)
            if vectors is None:
                return
            yield ids, vectors
            last = int(ids[-1])

    def ids(self) -> np.ndarray:
        """Every indexed id, ascending (the primary key alone: no vector is read)."""
        rows = self._query(SQL.ids)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of these ids, in their order (every id must be indexed)."""
        wanted = [int(i) for i in ids]
        found = self._vector_rows(wanted)
        if len(found) < len(set(wanted)):
            raise KeyError("some ids are not indexed")
        return self._stack(found, wanted)

    def vectors_present(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids of these still indexed (in their order) and their vectors: ids read before
        an image was removed (by another thread or process) are left out, not an error."""
        found = self._vector_rows([int(i) for i in ids])
        kept = [int(i) for i in ids if int(i) in found]
        return np.array(kept, dtype=np.int64), self._stack(found, kept)

    def _ids_and_vectors(self, rows: list[tuple[Any, ...]]) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows of (id, vector blob, ...) -> ids and an (N, D) float32 matrix (None if no
        row)."""
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, None
        return ids, vectors_from_blobs([row[1] for row in rows], self.vector_dtype)

    def _stack(self, found: dict[int, bytes], ids: list[int]) -> np.ndarray:
        """The stored vectors of ``ids`` (all in ``found``) as an (N, D) float32 matrix."""
        if not ids:
            return np.empty((0, 0), dtype=np.float32)
        return vectors_from_blobs([found[i] for i in ids], self.vector_dtype)

    def _vector_rows(self, wanted: list[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for start in range(0, len(wanted), 500):  # stay under SQLite's variable limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT id, vector FROM images WHERE id IN ({marks})", chunk):
                found[int(row[0])] = row[1]
        return found

    def sample_vectors(self, size: int, *, seed: int = 0) -> np.ndarray:
        """Vectors of up to ``size`` images drawn at random (fitting PCA and the like); an
        image removed while they are read is left out."""
        return self.vectors_present(sample_ids(self.ids(), size, seed))[1]

    def vectors_since(self, cursor: int | None) -> VectorChanges:
        """Every indexed id, and the rows written after ``cursor`` (the ``latest`` of an
        earlier call; None for everything), in one snapshot.

        Rows carry the change sequence number of the write that stored them, a counter
        that only grows (wall-clock stamps lose rows when the clock steps back)."""
        db = self._read_connection()
        writing = db is self._db  # inside this thread's write transaction: already one
        if not writing:
            db.execute("BEGIN")  # deferred: one read snapshot across the queries
        try:
            latest = int(self.get_meta("change_seq") or 0)
            # None after a cursor: no image removed since, the ids held and the rows are
            # all there is; for everything (no cursor): the ids of the rows
            all_ids: np.ndarray | None = None
            if cursor is None:  # everything, in the table's own (id) order
                changed = db.execute(SQL.all_vectors).fetchall()
            else:
                # The seq index, not ORDER BY id, which would make SQLite walk the whole
                # table in id order (seconds at a million rows of vectors).
                changed = db.execute(
                    "SELECT id, vector FROM images INDEXED BY images_seq WHERE seq > ?",
                    (int(cursor),),
                ).fetchall()
                changed.sort(key=lambda row: int(row[0]))
                if int(self.get_meta("removed_seq") or 0) > int(cursor):
                    rows = db.execute("SELECT id FROM images INDEXED BY images_seq")
                    all_ids = np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64))
        finally:
            if not writing:
                db.execute("COMMIT")
        ids, vectors = self._ids_and_vectors(changed)
        if cursor is None:
            all_ids = ids
        return VectorChanges(all_ids=all_ids, ids=ids, vectors=vectors, latest=latest)

    def lookup(self, path: str) -> tuple[int, np.ndarray] | None:
        """Id and vector of an indexed file, if it is indexed and unchanged on disk since."""
        rows = self._query(SQL.lookup, (_db_path(path),))
        if not rows or not unchanged_on_disk(path, rows[0][2], rows[0][3]):
            return None
        return int(rows[0][0]), vectors_from_blobs([rows[0][1]], self.vector_dtype)[0]

    def paths(self, ids: Iterable[int]) -> dict[int, str]:
        return {i: r.path for i, r in self.records(ids).items()}

    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        """Metadata of indexed images by id (unknown ids are left out)."""
        wanted = [int(i) for i in ids]
        found: dict[int, ImageRecord] = {}
        for start in range(0, len(wanted), 500):  # stay under SQLite's variable limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(SQL.records.format(ids=f"i.id IN ({marks})"), chunk):
                found[int(row[0])] = ImageRecord(
                    int(row[0]),
                    _path_from_db(row[1]),
                    row[2],
                    row[3],
                    row[4],
                    row[5],
                    parse_box(row[6]),
                )
        return found

    def set_labels(self, labels: dict[str, str]) -> int:
        """Set the category of files by absolute path; returns how many changed."""
        changed = 0
        with self._transaction():
            for path, category in labels.items():
                changed += self._db.execute(
                    "INSERT INTO labels (path, category) VALUES (?, ?) ON CONFLICT(path)"
                    " DO UPDATE SET category = excluded.category"
                    " WHERE category IS NOT excluded.category",
                    (_db_path(path), category),
                ).rowcount
            if changed:
                self._db.execute(SQL.bump_meta, (LABELS_GENERATION,))
        return changed

    def labels_generation(self) -> int:
        """Changes whenever labels change (a trained classifier records the one it saw)."""
        return int(self.get_meta(LABELS_GENERATION) or 0)

    def labelled_ids(self) -> tuple[np.ndarray, list[str]]:
        """Ids of indexed images that have a category, and those categories (id order)."""
        # From the labels (none, or far fewer than the images, in most collections) to the
        # images by path, not a scan of every image: CROSS JOIN keeps that order.
        rows = self._query(
            "SELECT i.id, l.category FROM labels l CROSS JOIN images i ON i.path = l.path"
        )
        rows.sort(key=lambda row: int(row[0]))
        return np.array([r[0] for r in rows], dtype=np.int64), [str(r[1]) for r in rows]

    def category_counts(self) -> dict[str, int]:
        rows = self._query(SQL.category_counts)
        return {str(r[0]): int(r[1]) for r in rows}

    # --- clusters --------------------------------------------------------------------------

    def set_clusters(self, clusters: dict[int, int]) -> None:
        """Replace every image's cluster (images not given get none; -1 means noise)."""
        with self._transaction():
            self._db.execute(SQL.clear_clusters)
            self._db.executemany(
                "UPDATE images SET cluster = ? WHERE id = ?",
                [(int(c), int(i)) for i, c in clusters.items()],
            )

    def cluster_counts(self) -> dict[int, int]:
        rows = self._query(SQL.cluster_counts)
        return {int(r[0]): int(r[1]) for r in rows}

    # --- searching -------------------------------------------------------------------------

    def index_file(self) -> Path:
        """The approximate index of a large collection is kept beside the file:
        ``<db>.ann`` (:mod:`lookalike.index.persistent`)."""
        return self.path.with_name(self.path.name + ".ann")

    def database_index(self) -> None:
        """None: searches use an index built from the vectors (SQLite does not search)."""
        return None

    def reduce(self) -> None:
        """Nothing: the indexes built from the vectors follow the codec themselves."""


def _db_path(path: str) -> str | bytes:
    """A path as stored: text if the name is valid UTF-8, else the raw bytes of the name.

    Python gives undecodable bytes of a file name as lone surrogates (``os.fsdecode``),
    which SQLite text cannot hold; ``os.fsencode`` turns them back into the exact bytes.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(path)
        except UnicodeEncodeError:  # surrogates no file name can have: matches no file
            return path.encode("utf-8", "surrogatepass")
    return path


def _path_from_db(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Schema 1 lacked the box and cluster columns and the labels, artifacts and skipped
    tables."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(images)")}
    if "box" not in columns:
        db.execute("ALTER TABLE images ADD COLUMN box TEXT")
    if "cluster" not in columns:
        db.execute("ALTER TABLE images ADD COLUMN cluster INTEGER")
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS images_cluster ON images (cluster)")
    db.execute("CREATE TABLE IF NOT EXISTS labels (path TEXT PRIMARY KEY, category TEXT NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS artifacts (name TEXT PRIMARY KEY, data BLOB NOT NULL)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS skipped (path TEXT PRIMARY KEY, size INTEGER NOT NULL,"
        " mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL)"
    )


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """Schema 3 orders changes by a sequence number instead of the wall clock: the rows
    already there become change 1 (cursors of the old kind never outlive a process)."""
    db.execute("ALTER TABLE images ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    if db.execute("SELECT 1 FROM images LIMIT 1").fetchone():
        db.execute("UPDATE images SET seq = 1")
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('change_seq', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        )
    db.execute("DROP INDEX IF EXISTS images_indexed_at")
    db.execute("CREATE INDEX IF NOT EXISTS images_seq ON images (seq)")


def _migrate_3_to_4(db: sqlite3.Connection) -> None:
    """Schema 4 records how vectors are stored: a file made before it holds float32 and
    keeps it (its vectors are not rewritten); only new files store float16."""
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, 'float32') ON CONFLICT(key) DO NOTHING",
        (VECTOR_FORMAT,),
    )


#: Upgrades by the schema version they start from; each runs in its own transaction.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
}


def vector_blob(vector: np.ndarray, dtype: np.dtype[Any]) -> bytes:
    """One vector as stored, in ``dtype`` (:data:`VECTOR_DTYPES`); the only serialisation.

    Vectors are L2-normalised by every producer, far inside float16's range; a value that
    would overflow it (inf) is refused rather than stored, where it would poison searches."""
    with np.errstate(over="ignore"):  # checked below
        stored = np.asarray(vector, dtype=np.float32).astype(dtype)
    if not np.isfinite(stored).all():
        raise StoreError(f"a vector with a value beyond {dtype.name}'s range cannot be stored")
    return stored.tobytes()


def vectors_from_blobs(blobs: list[bytes], dtype: np.dtype[Any]) -> np.ndarray:
    """Stored vectors (blobs of one length, in ``dtype``) -> an (N, D) float32 matrix; the
    only deserialisation."""
    flat = np.frombuffer(b"".join(blobs), dtype=dtype)
    return flat.reshape(len(blobs), -1).astype(np.float32, copy=False)


def recognise(db: sqlite3.Connection) -> str:
    """What an open SQLite file is: ``collection`` (the application id, or the exact schema
    of a collection made before it), ``empty`` (no table: a new collection may be made in
    it) or ``foreign`` (anything else). Reads only."""
    app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    if app_id == APPLICATION_ID:
        return "collection"
    if app_id != 0:
        return "foreign"
    tables = {
        str(r[0])
        for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not str(r[0]).startswith("sqlite_")
    }
    if not tables:
        return "empty"
    if "images" in tables and tables <= _TABLES:
        columns = frozenset(str(r[1]) for r in db.execute("PRAGMA table_info(images)"))
        if columns in _IMAGE_COLUMNS:
            return "collection"
    return "foreign"


def is_collection(path: Path) -> bool:
    """Whether ``path`` is a lookalike collection file (read without changing anything)."""
    try:
        db = _connect(path, read_only=True)
    except sqlite3.Error:
        return False
    try:
        return recognise(db) == "collection"
    except sqlite3.Error:
        return False
    finally:
        db.close()


def _on_read_only_media(path: Path) -> bool:
    """True when the file or its folder cannot be written (a read-only mount says so even
    to root; SQLite needs the folder for its WAL files)."""
    return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


def _connect(path: Path, *, read_only: bool, create: bool = True) -> sqlite3.Connection:
    """A connection (``read_only``: that can never write, nor create a file; ``create``
    False: that opens an existing file only). A WAL file whose ``-shm`` cannot be made on
    read-only media is opened ``immutable``."""
    uri = "file:" + urllib.parse.quote(str(path.absolute()))
    if not read_only:
        if create:
            return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        return sqlite3.connect(
            f"{uri}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
        )
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    return sqlite3.connect(
        f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False
    )
