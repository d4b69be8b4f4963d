"""Category-aware search on Caltech-101's train/test split, and on fine-grained splits of it.

    .venv/bin/python benchmarks/eval_category.py [--caltech ../shared/datasets/caltech101] \\
        [--cache-dir /tmp/labels] [--split caltech few subkinds merged]

The collection is the train split (6,096 images, labelled, a classifier and the labels' LDA
projection fitted on them); the queries are the test split's images (BACKGROUND_Google left
out as queries). The other splits relabel or thin out the same two halves:

* ``few``: only the categories with at most 60 images (few to learn from, as on a 102-kind
  flower set);
* ``subkinds``: every category cut in two by how colourful its images are (above or below
  the category's median, Hasler and Suesstrunk's measure): 202 kinds that differ by a visual
  attribute within look-alike pairs;
* ``merged``: the categories merged two by two (in name order): 51 coarse kinds.

Per split and method (``plain``: no labels; ``filter``: the top predicted categories only,
the whole collection when the prediction is unsure; ``soft``: every image, weighted by the
probability of its category, the default), through ``Collection.search_detailed``:
precision@10 and mAP over the top 100 (relevant = same kind), how often the search went
to the whole collection (``fallback``), the share of the collection it scanned and the
median time of the search step (vector in, 10 results out; 400 of the queries, one at a
time). A rerun reuses the embedded vectors in ``--cache-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike import Collection
from lookalike.analysis.evaluate import read_labels
from lookalike.search.engine import CategoryRanking

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101"
DISTRACTOR = "BACKGROUND_Google"
SPLITS = ("caltech", "few", "subkinds", "merged")
METHODS = ("plain", "filter", "soft")
FEW_IMAGES = 60
MAP_DEPTH = 100
#: Queries searched one at a time for the search step's time (the scores: all, batched).
TIMED = 400


def colourfulness(path: str) -> float:
    """Hasler and Suesstrunk's colourfulness of the image, on a 64x64 thumbnail."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
    rg = pixels[..., 0] - pixels[..., 1]
    yb = (pixels[..., 0] + pixels[..., 1]) / 2 - pixels[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def split_labels(split: str, labels: dict[str, str], paths: list[str]) -> dict[str, str]:
    """The kinds of ``paths`` (train and test together) in ``split``; a path left out of the
    split is left out of the answer."""
    if split == "caltech":
        return {p: labels[p] for p in paths}
    if split == "few":
        counts: dict[str, int] = {}
        for p in paths:
            counts[labels[p]] = counts.get(labels[p], 0) + 1
        return {
            p: labels[p]
            for p in paths
            if counts[labels[p]] <= FEW_IMAGES and labels[p] != DISTRACTOR
        }
    if split == "merged":
        names = sorted({labels[p] for p in paths} - {DISTRACTOR})
        merged = {name: names[2 * (i // 2)] for i, name in enumerate(names)}
        return {p: merged.get(labels[p], labels[p]) for p in paths}
    if split == "subkinds":
        colour = {p: colourfulness(p) for p in paths if labels[p] != DISTRACTOR}
        out = {p: labels[p] for p in paths if labels[p] == DISTRACTOR}
        for name in {labels[p] for p in colour}:
            members = [p for p in colour if labels[p] == name]
            median = float(np.median([colour[p] for p in members]))
            out.update({p: f"{name}/{'vivid' if colour[p] > median else 'dull'}" for p in members})
        return out
    raise ValueError(split)


def average_precision(hits: list[bool], relevant: int) -> float:
    """Average precision over the ranking ``hits`` (truncated at MAP_DEPTH)."""
    found, total = 0, 0.0
    for rank, hit in enumerate(hits, 1):
        if hit:
            found += 1
            total += found / rank
    return total / max(min(relevant, MAP_DEPTH), 1)


def evaluate_split(
    split: str,
    train_db: Path,
    work: Path,
    kinds: dict[str, str],
    queries: list[tuple[np.ndarray, str]],
) -> dict[str, object]:
    """One split: the train collection copied, thinned to the split and relabelled."""
    db = work / f"{split}.db"
    with sqlite3.connect(train_db) as source, sqlite3.connect(db) as target:
        source.backup(target)
    with Collection.open(db) as collection:
        ids, _ = collection.store.load_vectors()
        paths = collection.store.paths(ids)
        gone = [p for p in paths.values() if p not in kinds]
        if gone:
            collection.remove(gone)
        started = time.perf_counter()
        collection.set_labels({p: kinds[p] for p in paths.values() if p in kinds})
        fit_seconds = time.perf_counter() - started
        collection.index()  # load once, outside the timings
        in_collection = [kinds[p] for p in paths.values() if p in kinds]
        relevant = {k: in_collection.count(k) for k in set(in_collection)}
        asked = [(v, kinds[p]) for v, p in queries if p in kinds]
        out: dict[str, object] = {
            "collection": len(in_collection),
            "kinds": len(relevant),
            "queries": len(asked),
            "fit_seconds": round(fit_seconds, 1),
        }
        for method in METHODS:
            by_category = method != "plain"
            ranking: CategoryRanking = "filter" if method == "filter" else "soft"
            vectors, wanted = [v for v, _ in asked], [kind for _, kind in asked]
            found = collection.search_detailed(
                vectors, k=10, by_category=by_category, category_ranking=ranking
            )
            deep = collection.search_detailed(
                vectors, k=MAP_DEPTH, by_category=by_category, category_ranking=ranking
            )
            p10 = [
                sum(r.category == kind for r in outcome.results) / 10
                for outcome, kind in zip(found, wanted, strict=True)
            ]
            aps = [
                average_precision(
                    [r.category == kind for r in outcome.results], relevant.get(kind, 0)
                )
                for outcome, kind in zip(deep, wanted, strict=True)
            ]
            fallbacks = sum(outcome.searched is None for outcome in found) if by_category else 0
            scanned = [collection.scanned_fraction(outcome.searched) for outcome in found]
            times = []
            for vector in vectors[:: max(len(vectors) // TIMED, 1)]:
                started = time.perf_counter()
                collection.search_detailed(
                    [vector], k=10, by_category=by_category, category_ranking=ranking
                )
                times.append(time.perf_counter() - started)
            out[method] = {
                "precision@10": round(float(np.mean(p10)), 4),
                f"mAP@{MAP_DEPTH}": round(float(np.mean(aps)), 4),
                "fallback_rate": round(fallbacks / len(asked), 4) if method != "plain" else None,
                "scanned_fraction": round(float(np.mean(scanned)), 4) if by_category else 1.0,
                "search_step_ms_p50": round(statistics.median(times) * 1000, 3),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, default=DEFAULT_CALTECH)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--split", nargs="+", choices=SPLITS, default=list(SPLITS))
    args = parser.parse_args()
    images = args.caltech / "101_ObjectCategories"
    labels = read_labels(args.caltech, args.caltech / "labels.csv")
    # (the split files list one path that labels.csv does not: BACKGROUND_Google/tmp)
    train = [str(images / p) for p in (args.caltech / "train.txt").read_text().split()]
    train = [os.path.abspath(p) for p in train if os.path.abspath(p) in labels]
    test = [str(images / p) for p in (args.caltech / "test.txt").read_text().split()]
    test = [
        os.path.abspath(p) for p in test if labels.get(os.path.abspath(p), DISTRACTOR) != DISTRACTOR
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        with Collection.open(cache / f"test-{args.model}.db", model=args.model) as queries_db:
            queries_db.add(test)
            qids, qvectors = queries_db.store.load_vectors()
            qpaths = queries_db.store.paths(qids)
        queries = [(v, qpaths[int(i)]) for i, v in zip(qids, qvectors, strict=True)]
        train_db = cache / f"train-{args.model}.db"
        with Collection.open(train_db, model=args.model) as collection:
            collection.add(train)
        report: dict[str, object] = {"model": args.model}
        with tempfile.TemporaryDirectory() as work:
            for split in args.split:
                kinds = split_labels(split, labels, train + test)
                report[split] = evaluate_split(split, train_db, Path(work), kinds, queries)
                print(json.dumps({split: report[split]}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
