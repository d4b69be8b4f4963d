"""What the SQLite and PostgreSQL stores share: the statements they both run (meta, fitted
models, labels, categories, clusters, the reads of files and vectors) and the conversions of
their rows.

Statements are written once, with ``?`` placeholders, and given to each store in its
driver's style (:data:`SQLITE`, :data:`POSTGRES`). What stays in a store is what differs by
engine: the schema's types, the change feed's snapshot, bulk writes (PostgreSQL sends arrays,
``unnest``), and query plans chosen for one engine (SQLite's ``CROSS JOIN`` order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import numpy as np

from lookalike.types import Box


@dataclass(frozen=True)
class Statements:
    """The shared statements, in one placeholder style."""

    get_meta: str = "SELECT value FROM meta WHERE key = ?"
    set_meta: str = (
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    #: Adds one to a counter kept in meta (1 if it has none yet).
    bump_meta: str = (
        "INSERT INTO meta (key, value) VALUES (?, '1')"
        " ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)"
    )
    get_artifact: str = "SELECT data FROM artifacts WHERE name = ?"
    put_artifact: str = (
        "INSERT INTO artifacts (name, data) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET data = excluded.data"
    )
    delete_artifact: str = "DELETE FROM artifacts WHERE name = ?"
    skipped_files: str = "SELECT path, size, mtime_ns, reason FROM skipped ORDER BY path"
    count: str = "SELECT COUNT(*) FROM images"
    ids: str = "SELECT id FROM images ORDER BY id"
    all_vectors: str = "SELECT id, vector FROM images ORDER BY id"
    vector_batch: str = "SELECT id, vector FROM images WHERE id > ? ORDER BY id LIMIT ?"
    lookup: str = "SELECT id, vector, size, mtime_ns FROM images WHERE path = ?"
    #: Records of the ids in a list; ``{ids}`` is the engine's "id in this list" test.
    records: str = (
        "SELECT i.id, i.path, i.width, i.height, l.category, i.cluster, i.box"
        " FROM images i LEFT JOIN labels l ON l.path = i.path WHERE {ids}"
    )
    category_counts: str = (
        "SELECT l.category, COUNT(*) FROM images i JOIN labels l ON l.path = i.path"
        " GROUP BY l.category ORDER BY l.category"
    )
    clear_clusters: str = "UPDATE images SET cluster = NULL WHERE cluster IS NOT NULL"
    cluster_counts: str = (
        "SELECT cluster, COUNT(*) FROM images WHERE cluster IS NOT NULL"
        " GROUP BY cluster ORDER BY cluster"
    )

    @classmethod
    def with_placeholder(cls, mark: str) -> Statements:
        """Every statement with ``mark`` for ``?`` (no statement holds a literal ``?``)."""
        return cls(**{f.name: getattr(cls, f.name).replace("?", mark) for f in fields(cls)})


#: sqlite3's placeholders (``?``) and psycopg's (``%s``).
SQLITE = Statements()
POSTGRES = Statements.with_placeholder("%s")

#: Meta keys of the counters both stores keep.
LABELS_GENERATION = "labels_generation"


def box_text(box: Box | None) -> str | None:
    """An object box as stored: four fractions, comma-separated."""
    return None if box is None else ",".join(f"{v:.5f}" for v in box)


def parse_box(text: str | None) -> Box | None:
    if not text:
        return None
    x0, y0, x1, y1 = (float(v) for v in text.split(","))
    return x0, y0, x1, y1


def unchanged_on_disk(path: str, size: int, mtime_ns: int) -> bool:
    """Whether the file still has the size and modification time recorded (a store's
    ``lookup`` gives a stored vector only for a file that has not changed since)."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return (stat.st_size, stat.st_mtime_ns) == (size, mtime_ns)


def sample_ids(ids: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` of these ids drawn at random, ascending (all of them if no more); the
    same draw in every store for the same ids."""
    if len(ids) <= size:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size, replace=False))
