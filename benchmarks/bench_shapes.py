"""Approximate search on four data shapes (issue 23): recall@10 against the exact scan, search
step, build time and index bytes per index configuration, on collections built through the
product's write path (Parquet import), so that what is measured is what users get.

    flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_shapes.py \
        --real /tmp/scale8/caltech.parquet --n 100000 --work /tmp/refine/shapes

Vectors are shaped like real EfficientNet-Lite0 vectors, made from the real vectors of
``--real`` (``lookalike embed ../shared/datasets/caltech101 --out caltech.parquet``), written
to Parquet a chunk at a time (never the whole collection in memory):

``spread``
    spread-out images: a real vector plus noise drawn from the real vectors' own spread,
    ``x_i + (x_j - x_k) / sqrt(2)`` (as ``bench_scale.py make``);
``families``
    dense families of near-variants (issue 23's generator): ``n / 1000`` real items, each
    with about 1,000 variants ``x_i + s (x_j - x_k) / sqrt(2)``, ``s`` uniform in 5%..100%;
``copies``
    many exact copies: spread-out images, 30% of whose rows are byte-identical copies of 5%
    of the rows (about six copies each);
``grown``
    grown after fitting: a first import (92% of the rows) of spread-out images of 80% of
    the Caltech categories fits the codec and builds the index; a second import (the last
    8%: below the growth of :data:`lookalike.config.PCA_REFIT_FRACTION` that refits the
    codec) of images of the other 20% only, followed into the index by the write path.

Queries are real vectors held out of the generation (never in the collection). Recall@10
counts a result right when its exact score reaches the exact 10th score (ties, as exact
copies make, are equally right). The search step is one query at a time, its index-space
vector to the top k + DELETED_SLACK (what :func:`lookalike.search.engine.rank` asks), the
refine step's store reads included. ``pool`` 0 is the FAISS index alone (before issue 23).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lookalike import Collection, config
from lookalike.encode.models import builtin_spec
from lookalike.index.ann import AnnIndex, SearchSettings
from lookalike.index.refine import RefinedIndex
from lookalike.pipeline import parquet_io

SHAPES = ("spread", "families", "copies", "grown")
CHUNK = 50_000
VARIANTS_PER_ITEM = 1000
COPY_SHARE = 0.3
COPY_SOURCES = 0.05
NEW_CATEGORIES = 0.2
#: The configurations measured: kind -> search breadths (efSearch or nprobe), refine pools.
SWEEP: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "hnsw": ((64, 128, 256), (0, 50, 100, 200)),
    "ivf": ((16, 32, 64, 128), (0, 50, 100, 200)),
}


def real_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The real vectors and each one's category (its photo's folder)."""
    paths: list[str] = []
    parts = []
    for names, vectors in parquet_io.iter_vectors(path):
        paths.extend(names)
        parts.append(vectors)
    return np.concatenate(parts).astype(np.float32), np.array([Path(p).parent.name for p in paths])


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def spread(
    base: np.ndarray, count: int, rng: np.random.Generator, items: np.ndarray | None = None
) -> np.ndarray:
    """``count`` spread-out vectors around real ones (of ``items`` rows, default all)."""
    centres = items if items is not None else np.arange(len(base))
    i = centres[rng.integers(0, len(centres), count)]
    j, k = (rng.integers(0, len(base), count) for _ in range(2))
    return unit(base[i] + (base[j] - base[k]) / np.sqrt(2))


def chunks(
    shape: str, base: np.ndarray, n: int, seed: int, items: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """The rows of a shape, a chunk at a time."""
    rng = np.random.default_rng(seed)
    items = rng.choice(len(base), max(1, n // VARIANTS_PER_ITEM), replace=False)
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        if shape == "families":
            item = items[rng.integers(0, len(items), count)]
            j, k = (rng.integers(0, len(base), count) for _ in range(2))
            strength = rng.uniform(0.05, 1.0, count)[:, None]
            yield unit(base[item] + strength * (base[j] - base[k]) / np.sqrt(2))
        elif shape == "copies":
            copies = round(COPY_SHARE * count)
            fresh = spread(base, count - copies, rng)
            sources = rng.integers(0, max(1, round(COPY_SOURCES * count)), copies)
            rows = np.concatenate([fresh, fresh[sources]])
            yield rows[rng.permutation(count)]
        else:  # spread, and each part of grown (``items``: the rows its centres come from)
            yield spread(base, count, rng, items)


def write_parquet(parts: Iterator[np.ndarray], out: Path, prefix: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_io.schema(builtin_spec("efficientnet-lite0"))
    written = 0
    with pq.ParquetWriter(str(out), schema) as writer:
        for vectors in parts:
            count = len(vectors)
            flat = pa.array(vectors.ravel(), type=pa.float32())
            offsets = pa.array(np.arange(0, count * vectors.shape[1] + 1, vectors.shape[1]))
            names = [f"/{prefix}/{written + n:08}.jpg" for n in range(count)]
            table = pa.table(
                {
                    "path": pa.array(names),
                    "vector": pa.ListArray.from_arrays(offsets.cast(pa.int32()), flat),
                    "size": pa.array(np.full(count, 1, np.int64)),
                    "mtime_ns": pa.array(np.full(count, 1, np.int64)),
                    "width": pa.array(np.full(count, 640, np.int32)),
                    "height": pa.array(np.full(count, 480, np.int32)),
                },
                schema=schema,
            )
            writer.write_table(table)
            written += count
    return written


def parquet_files(
    shape: str, base: np.ndarray, categories: np.ndarray, n: int, work: Path
) -> list[Path]:
    """The Parquet file(s) of a shape, imported in this order (made once, then reused)."""
    if shape != "grown":
        out = work / f"{shape}-{n}.parquet"
        if not out.exists():
            write_parquet(chunks(shape, base, n, seed=1), out, shape)
        return [out]
    names = np.unique(categories)
    new = np.random.default_rng(3).choice(names, round(NEW_CATEGORIES * len(names)), replace=False)
    is_new = np.isin(categories, new)
    first = round(n / (1 + 0.9 * config.PCA_REFIT_FRACTION))
    files = [work / f"grown-{n}-first.parquet", work / f"grown-{n}-then.parquet"]
    if not files[0].exists():
        old_rows = np.flatnonzero(~is_new)
        write_parquet(chunks("grown", base, first, 1, items=old_rows), files[0], "first")
    if not files[1].exists():
        new_rows = np.flatnonzero(is_new)
        write_parquet(chunks("grown", base, n - first, 2, items=new_rows), files[1], "then")
    return files


def build(shape: str, kind: str, files: list[Path], db: Path) -> dict[str, object]:
    """A collection of the shape through the write path, its index of ``kind``."""
    for stale in db.parent.glob(db.name + "*"):
        stale.unlink(missing_ok=True)
    spec = parquet_io.read_spec(files[0])
    started = time.perf_counter()
    with Collection.open(db, model=spec) as collection:
        collection.set_index(kind)
        for file in files:  # the grown shape: a second import, followed into the index
            parquet_io.import_files(collection, [file])
        info = collection.index_info()
        followed = collection.snapshots.followed()
        assert followed is not None and followed.build_seconds is not None
        return {
            "import_and_build_s": round(time.perf_counter() - started, 1),
            "build_s": round(followed.build_seconds, 1),
            "index_bytes": info["bytes"],
            "images": info["images"],
        }


def measure(db: Path, queries: np.ndarray, kind: str) -> list[dict[str, object]]:
    """Recall@10 and search step of every configuration of ``kind`` on the collection."""
    from lookalike.index.persistent import exact_search

    rows = []
    with Collection.open(db, create=False) as collection:
        snapshot = collection.snapshot()
        refined = snapshot.index
        assert isinstance(refined, RefinedIndex)
        approximate: AnnIndex = refined.approximate
        codec, store = snapshot.codec, collection.store
        encoded = snapshot.encode(queries)
        truth_scores, _ = exact_search(store, codec, encoded, 10)
        tenth = truth_scores[:, 9]
        asked = config.DEFAULT_K + config.DELETED_SLACK
        breadths, pools = SWEEP[kind]
        for breadth in breadths:
            approximate.settings = SearchSettings(nprobe=breadth, ef_search=breadth)
            for pool in pools:
                index = RefinedIndex(approximate, store, codec, pool=pool) if pool else approximate
                index.search(encoded[:5], asked)  # warm
                times, found = [], []
                for q in encoded:
                    t = time.perf_counter()
                    ids = index.search(q[None], asked)[1][0]
                    times.append(time.perf_counter() - t)
                    found.append(ids[:10])
                right = []
                for row, ids in enumerate(found):
                    true = codec.transform(store.vectors_of(ids)) @ encoded[row]
                    right.append(float(np.sum(true >= tenth[row] - 1e-5)) / 10)
                rows.append(
                    {
                        "kind": kind,
                        "breadth": breadth,
                        "pool": pool,
                        "recall@10": round(float(np.mean(right)), 4),
                        "search_ms_p50": round(1000 * statistics.median(times), 2),
                        "search_ms_p95": round(1000 * float(np.percentile(times, 95)), 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(reports: list[dict[str, Any]]) -> str:
    """The reports' results as two Markdown tables: recall@10 per shape and the search step
    (the slowest shape's p50 / p95) per configuration; build time and bytes per index."""
    results = [row for report in reports for row in report["results"]]
    shapes = [s for s in SHAPES if any(r["shape"] == s for r in results)]
    configs = sorted({(r["kind"], r["breadth"], r["pool"]) for r in results})
    lines = [
        "| index | breadth | pool | " + " | ".join(shapes) + " | p50 ms | p95 ms |",
        "|---|---:|---:|" + "---:|" * len(shapes) + "---:|---:|",
    ]
    for kind, breadth, pool in configs:
        rows = {
            r["shape"]: r
            for r in results
            if (r["kind"], r["breadth"], r["pool"]) == (kind, breadth, pool)
        }
        recalls = [f"{rows[s]['recall@10']:.3f}" if s in rows else "" for s in shapes]
        p50 = max(r["search_ms_p50"] for r in rows.values())
        p95 = max(r["search_ms_p95"] for r in rows.values())
        name = f"{kind} {'efSearch' if kind == 'hnsw' else 'nprobe'}"
        lines.append(f"| {name} | {breadth} | {pool} | {' | '.join(recalls)} | {p50} | {p95} |")
    builds = {(r["shape"], r["kind"]): r for r in results}
    lines += ["", "| shape | index | build s | index bytes |", "|---|---|---:|---:|"]
    for (shape, kind), r in sorted(builds.items()):
        lines.append(f"| {shape} | {kind} | {r['build_s']} | {r['index_bytes']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=Path("/tmp/scale8/caltech.parquet"))
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lookalike-shapes"))
    parser.add_argument("--queries", type=int, default=200, help="real vectors held out")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--kinds", nargs="+", choices=list(SWEEP), default=list(SWEEP))
    parser.add_argument("--out", type=Path, help="the report (JSON) is also written here")
    parser.add_argument("--hnsw-ef", type=int, nargs="+", help="efSearch values (HNSW)")
    parser.add_argument("--ivf-nprobe", type=int, nargs="+", help="nprobe values (IVF)")
    parser.add_argument("--pools", type=int, nargs="+", help="refine pools (0: no refine)")
    parser.add_argument(
        "--table", type=Path, nargs="+", help="only print these reports (--out) as Markdown"
    )
    args = parser.parse_args()
    if args.table:
        print(markdown([json.loads(path.read_text()) for path in args.table]))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    for kind, breadths in (("hnsw", args.hnsw_ef), ("ivf", args.ivf_nprobe)):
        SWEEP[kind] = (tuple(breadths or SWEEP[kind][0]), tuple(args.pools or SWEEP[kind][1]))
    real, categories = real_vectors(args.real)
    held = np.random.default_rng(7).choice(len(real), args.queries, replace=False)
    kept = np.setdiff1d(np.arange(len(real)), held)
    queries, base, base_categories = real[held], real[kept], categories[kept]
    report: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_average_before": [round(v, 1) for v in os.getloadavg()],
        "n": args.n,
        "queries": args.queries,
        "defaults": {
            "kind": config.ANN_KIND,
            "ef_search": config.ANN_EF_SEARCH,
            "nprobe": config.ANN_NPROBE,
            "pool": config.ANN_REFINE_POOL,
        },
    }
    results = []
    for shape in args.shapes:
        files = parquet_files(shape, base, base_categories, args.n, args.work)
        for kind in args.kinds:
            db = args.work / f"{shape}-{kind}.db"
            built = build(shape, kind, files, db)
            print(json.dumps({"shape": shape, "kind": kind, **built}), flush=True)
            for row in measure(db, queries, kind):
                results.append({"shape": shape, **built, **row})
            for stale in db.parent.glob(db.name + "*"):
                stale.unlink(missing_ok=True)
    report["results"] = results
    report["load_average_after"] = [round(v, 1) for v in os.getloadavg()]
    text = json.dumps(report, indent=1)
    if args.out is not None:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
