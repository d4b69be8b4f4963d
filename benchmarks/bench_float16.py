"""What storing vectors as float16 costs (issue 23, "A compact store"): quality and speed.

    flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_float16.py quality \\
        ../shared/datasets/search-by-image --labels ../shared/datasets/search-by-image/labels.csv
    flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_float16.py quality \\
        ../shared/datasets/caltech101 --labels ../shared/datasets/caltech101/labels.csv \\
        --distractor BACKGROUND_Google --cache /tmp/compact/caltech-lite0.npz
    flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_float16.py scan \\
        --rows 200000 --work /tmp/compact
    .venv/bin/python benchmarks/bench_float16.py layout --rows 5000

``quality`` indexes the folder once into a float32 collection (as files made before schema 4
store them; reused by a second run), then scores the leave-one-out protocol of
docs/EVALUATION.md (:func:`lookalike.analysis.evaluate.leave_one_out`, the library's search
path, with the default codec, centring, as ``lookalike eval`` has it) on those vectors and
on their float16 rounding (what a new collection's store reads back, to the bit): mAP, P@10,
top-1, how many top-10 lists change (order, or membership) and the largest change of a
score. With ``--cache``, the vectors are a feature cache's (``benchmarks/feature_cache.py``,
its ``gem`` vectors: the default pooling) instead of a collection's, which saves embedding
the folder again. A third row scores the issue's other option, a store of the codec's
vectors only (PCA-256 fitted on the collection, float16), searched as they are.

``scan`` writes the same ``--rows`` random unit vectors into a float32 and a float16
collection through the store's one write path and times ``search --exact``'s scan
(:func:`lookalike.index.persistent.exact_search`, 50 queries, median of ``--repeat``) and the
store's reads alone, and gives the bytes each file takes an image (after a WAL checkpoint).

``layout`` gives the bytes an image takes in a new file by vector format, dimensions and
SQLite page size (``--rows`` rows with 40-character paths, through the store's write path).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike import config
from lookalike.analysis.evaluate import RetrievalScores, leave_one_out, read_labels
from lookalike.collection import Collection
from lookalike.index import codec as codecs
from lookalike.index.persistent import exact_search
from lookalike.store.records import EmbeddedImage
from lookalike.store.sqlite import Store


def as_float16(vectors: np.ndarray) -> np.ndarray:
    """What a float16 store reads back."""
    return vectors.astype(np.float16).astype(np.float32)


def float32_vectors(root: Path, db: Path) -> tuple[np.ndarray, list[str]]:
    """The raw vectors and paths of every image under ``root``, indexed once into a float32
    collection at ``db``."""
    config.SQLITE_VECTOR_FORMAT = "float32"
    with Collection.open(db) as collection:
        collection.add([root])
        assert isinstance(collection.store, Store)
        assert collection.store.get_meta("vector_format") == "float32"
        ids, vectors = collection.store.load_vectors()
        paths = collection.store.paths(ids)
    return vectors, [paths[int(i)] for i in ids]


def cached_vectors(cache: Path) -> tuple[np.ndarray, list[str]]:
    """The default (GeM) vectors and paths of a feature cache (benchmarks/feature_cache.py)."""
    with np.load(cache) as stored:
        return stored["gem"].astype(np.float32), [str(p) for p in stored["paths"]]


def top10(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the 10 nearest of each query row (itself left out), best first: the
    default codec (centring) fitted on these vectors, as a collection fits it."""
    coded = codecs.fit_codec({"dims": 0, "whiten": False}, vectors).transform(vectors)
    scores = coded[queries] @ coded.T
    scores[np.arange(len(queries)), queries] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return order, np.take_along_axis(scores, order, axis=1)


def _row(store: str, bytes_per_vector: int, scores: RetrievalScores) -> dict[str, object]:
    return {
        "store": store,
        "bytes_per_vector": int(bytes_per_vector),
        "mAP": round(scores.mean_average_precision, 4),
        "P@10": round(scores.precision_at_10, 4),
        "top-1": round(scores.top1_accuracy, 4),
    }


def quality(args: argparse.Namespace) -> None:
    labels_of = read_labels(args.root, args.labels)
    if args.cache is not None:
        vectors, paths = cached_vectors(args.cache)
    else:
        vectors, paths = float32_vectors(args.root, args.work / f"{args.root.name}-float32.db")
    keep = [i for i, p in enumerate(paths) if p in labels_of]
    vectors = vectors[keep]
    labels = [labels_of[paths[i]] for i in keep]
    distractors = frozenset(args.distractor)
    queries = np.array([i for i, label in enumerate(labels) if label not in distractors])
    rows = []
    lists = {}
    for name, stored in (("float32", vectors), ("float16", as_float16(vectors))):
        codec = codecs.fit_codec({"dims": 0, "whiten": False}, stored)  # eval's default
        scores = leave_one_out(stored, labels, distractors=distractors, codec=codec)
        lists[name] = top10(stored, queries)
        rows.append(_row(name, stored.shape[1] * (4 if name == "float32" else 2), scores))
    # the other option: only the codec's vectors kept (PCA-256, float16), searched
    # as they are (no full vector left to re-score with)
    pca = codecs.fit_codec({"dims": 256, "whiten": False}, vectors)
    reduced = as_float16(pca.transform(vectors))
    scores = leave_one_out(reduced, labels, distractors=distractors)
    rows.append(_row("PCA-256 float16 only", 256 * 2, scores))
    ids32, scores32 = lists["float32"]
    ids16, scores16 = lists["float16"]
    summary = {
        "dataset": str(args.root),
        "images": len(vectors),
        "queries": len(queries),
        "top10_lists_reordered": int((ids32 != ids16).any(axis=1).sum()),
        "top10_lists_other_members": int(
            sum(set(a) != set(b) for a, b in zip(ids32.tolist(), ids16.tolist(), strict=True))
        ),
        "top1_changed": int((ids32[:, 0] != ids16[:, 0]).sum()),
        "max_score_change": float(np.abs(scores32 - scores16).max()),
    }
    for row in rows:
        print(json.dumps(row))
    print(json.dumps(summary))


def _fill(
    path: Path, vectors: np.ndarray, vector_format: str, paths: list[str] | None = None
) -> Store:
    names = paths or [f"/scan/{i}.jpg" for i in range(len(vectors))]
    path.unlink(missing_ok=True)
    config.SQLITE_VECTOR_FORMAT = vector_format
    store = Store(path)
    for start in range(0, len(vectors), 5000):
        store.write_batch(
            [
                EmbeddedImage(names[i], 1, 1, 1, 1, vectors[i])
                for i in range(start, min(start + 5000, len(vectors)))
            ],
            [],
        )
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return store


def _median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def scan(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.rows, args.dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.rows, 50, replace=False)]
    args.work.mkdir(parents=True, exist_ok=True)
    for vector_format in ("float32", "float16"):
        path = args.work / f"scan-{args.rows}-{args.dims}-{vector_format}.db"
        store = _fill(path, vectors, vector_format)
        read = _median_seconds(lambda s=store: sum(len(i) for i, _ in s.vector_batches()), 3)
        search = _median_seconds(lambda s=store: exact_search(s, None, queries, 10), args.repeat)
        store.close()
        print(
            json.dumps(
                {
                    "store": vector_format,
                    "rows": args.rows,
                    "dims": args.dims,
                    "file_bytes_per_image": round(path.stat().st_size / args.rows),
                    "read_all_s": round(read, 3),
                    "exact_search_50_queries_s": round(search, 3),
                }
            )
        )
        path.unlink()


def layout(args: argparse.Namespace) -> None:
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "layout.db"
    paths = [f"/home/someone/Pictures/2024/IMG_{i:06d}.jpg" for i in range(args.rows)]
    for dims in (1280, 2560):
        vectors = np.random.default_rng(0).normal(size=(args.rows, dims)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for vector_format in ("float32", "float16"):
            sizes = {}
            for page in (4096, 8192, 16384, 65536):
                config.SQLITE_PAGE_SIZE = page
                _fill(path, vectors, vector_format, paths).close()
                sizes[page] = round(path.stat().st_size / args.rows)
            print(json.dumps({"dims": dims, "store": vector_format, "bytes_by_page": sizes}))
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser("quality")
    q.add_argument("root", type=Path)
    q.add_argument("--labels", type=Path, default=None)
    q.add_argument("--distractor", action="append", default=[])
    q.add_argument("--work", type=Path, default=Path("/tmp/compact"))
    q.add_argument("--cache", type=Path, default=None, help="a feature cache .npz instead")
    q.set_defaults(run=quality)
    s = commands.add_parser("scan")
    s.add_argument("--rows", type=int, default=200_000)
    s.add_argument("--dims", type=int, default=1280)
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--work", type=Path, default=Path("/tmp/compact"))
    s.set_defaults(run=scan)
    lay = commands.add_parser("layout")
    lay.add_argument("--rows", type=int, default=5000)
    lay.add_argument("--work", type=Path, default=Path("/tmp/compact"))
    lay.set_defaults(run=layout)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
