"""Re-ranking (``search --rerank``): its first-use cost per snapshot, its query time, and
whether an approximate index's candidate pool keeps the exact re-ranking's quality.

    # cost: synthetic clustered vectors, exact and HNSW snapshots (about 1 min at 10k;
    # 100k x 1280 HNSW: several minutes, the index build included)
    flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_rerank.py cost \\
        --sizes 10000 100000 --dims 1280
    # quality: Caltech-101 features of benchmarks/feature_cache.py, one held-out fold
    .venv/bin/python benchmarks/bench_rerank.py quality /tmp/quality11/caltech-lite0.npz

``cost`` prints, per size and index: the seconds :class:`lookalike.search.rerank.AugmentedVectors`
took to build (the neighbour pass: one batched search of the index; the exact index
compares every pair, an approximate one does N searches), the memory it holds (N x d
float32, beside the index), and the median per-query milliseconds of a plain and of a
re-ranked search (one query at a time, k=10), and for the exact index the seconds of
following a change of 10 added and 10 removed images (the next snapshot's vectors).
``quality`` compares precision@10 and the
overlap of the top 10 of plain search, exact re-ranking (every augmented vector) and
re-ranking of the HNSW index's candidate pool (:data:`lookalike.config.RERANK_POOL`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from lookalike.encode.models import normalize
from lookalike.index import registry as indexes
from lookalike.search import engine as search
from lookalike.search.snapshot import SearchSnapshot


def snapshot_of(kind: str, vectors: np.ndarray) -> SearchSnapshot:
    from lookalike.index.base import IdentityCodec

    index = indexes.build_index(kind, np.arange(len(vectors), dtype=np.int64), vectors)
    return SearchSnapshot(index, IdentityCodec(), None, None, (), None)


def clustered(n: int, dims: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 10), dims)).astype(np.float32)
    out = centres[rng.integers(0, len(centres), n)]
    out += rng.normal(size=(n, dims)).astype(np.float32)
    return normalize(out)


def per_query_ms(snapshot: SearchSnapshot, queries: np.ndarray, rerank_on: bool) -> float:
    augmented = snapshot.augmented() if rerank_on else None
    times = []
    for query in queries:
        started = time.perf_counter()
        search.rank(snapshot, query[None], 10, augmented=augmented)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def cost(sizes: list[int], dims: int, kinds: list[str]) -> None:
    for n in sizes:
        vectors = clustered(n, dims)
        queries = clustered(50, dims, seed=1)
        for kind in kinds:
            started = time.perf_counter()
            snapshot = snapshot_of(kind, vectors)
            built = time.perf_counter() - started
            plain = per_query_ms(snapshot, queries, False)
            augmented = snapshot.augmented()
            assert augmented is not None
            reranked = per_query_ms(snapshot, queries, True)
            followed = ""
            if kind == "exact":  # the next snapshot after adding 10 images and removing 10
                grown = snapshot.index.remove(np.arange(10)).add(
                    np.arange(n, n + 10), clustered(10, dims, seed=2)
                )
                after = augmented.follow(grown)
                followed = f" | +10/-10 followed {after.seconds:5.2f} s ({after.searched} rows)"
            print(
                f"n={n:>7} d={dims} {kind:5} index build {built:6.1f} s | augmented vectors "
                f"{augmented.seconds:6.1f} s, {augmented.vectors.nbytes / 2**20:7.1f} MiB | "
                f"query plain {plain:6.2f} ms, re-ranked {reranked:6.2f} ms{followed}",
                flush=True,
            )


def quality(npz: Path) -> None:
    data = np.load(npz, allow_pickle=False)
    labels = np.array([Path(p).parent.name for p in data["paths"]])
    vectors = data["gem"]
    vectors = normalize(vectors - vectors.mean(axis=0))  # the default codec: centring
    fold = np.random.default_rng(0).permutation(len(vectors)) % 5
    db_rows = np.flatnonzero(fold != 0)
    q_rows = np.flatnonzero((fold == 0) & (labels != "BACKGROUND_Google"))
    db_labels, q_labels = labels[db_rows], labels[q_rows]
    exact = snapshot_of("exact", vectors[db_rows])
    hnsw = snapshot_of("hnsw", vectors[db_rows])
    queries = vectors[q_rows]

    def p10(ids: np.ndarray) -> float:
        return float((db_labels[ids[:, :10]] == q_labels[:, None]).mean())

    _, plain = search.rank(exact, queries, 10)
    _, plain_hnsw = search.rank(hnsw, queries, 10)
    _, full = search.rank(exact, queries, 10, augmented=exact.augmented())
    _, pooled = search.rank(hnsw, queries, 10, augmented=hnsw.augmented())
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pooled, full, strict=True)])
    print(f"{npz.name}: {len(q_rows)} held-out queries, database {len(db_rows)}")
    print(f"  precision@10 plain exact {p10(plain):.4f}, plain hnsw {p10(plain_hnsw):.4f}")
    print(f"  precision@10 re-ranked exact {p10(full):.4f}, re-ranked hnsw pool {p10(pooled):.4f}")
    print(f"  top-10 overlap of pool re-ranking with exact re-ranking {overlap:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cost")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dims", type=int, default=1280)
    p.add_argument("--kinds", nargs="+", default=["exact", "hnsw"])
    p = sub.add_parser("quality")
    p.add_argument("npz", type=Path)
    args = parser.parse_args()
    if args.what == "cost":
        cost(args.sizes, args.dims, args.kinds)
    else:
        quality(args.npz)


if __name__ == "__main__":
    main()
