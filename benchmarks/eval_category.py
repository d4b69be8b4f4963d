"""Category-first search on Caltech-101's train/test split.

    .venv/bin/python benchmarks/eval_category.py [--caltech ../shared/datasets/caltech101]

The collection is the train split (6,096 images, labelled by folder, a classifier trained on
them); the queries are the test split's images (BACKGROUND_Google left out as queries).
Reported: the classifier's accuracy on the test images, how much of the collection a
category-first search scans, how often it falls back to a full search, precision@10 of
full and category-first search (relevant = same category), and the time of the search step
(vector in, results out) in both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike import Collection
from lookalike.analysis.evaluate import read_labels

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101"
DISTRACTOR = "BACKGROUND_Google"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, default=DEFAULT_CALTECH)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    images = args.caltech / "101_ObjectCategories"
    labels = read_labels(args.caltech, args.caltech / "labels.csv")
    # (the split files list one path that labels.csv does not: BACKGROUND_Google/tmp)
    train = [str(images / p) for p in (args.caltech / "train.txt").read_text().split()]
    train = [p for p in train if os.path.abspath(p) in labels]
    test = [str(images / p) for p in (args.caltech / "test.txt").read_text().split()]
    test = [p for p in test if labels.get(os.path.abspath(p), DISTRACTOR) != DISTRACTOR]
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        with Collection.open(cache / f"test-{args.model}.db", model=args.model) as queries_db:
            queries_db.add(test)
            qids, qvectors = queries_db.store.load_vectors()
            qpaths = queries_db.store.paths(qids)
        query_labels = [labels[qpaths[int(i)]] for i in qids]
        with Collection.open(cache / f"train-{args.model}.db", model=args.model) as collection:
            collection.add(train)
            started = time.perf_counter()
            collection.set_labels({p: labels[os.path.abspath(p)] for p in train})
            train_seconds = time.perf_counter() - started
            collection.index()  # load once, outside the timings
            classifier = collection.classifier()
            assert classifier is not None
            predicted = classifier.predict(qvectors)
            rows: dict[str, list[float]] = {"full": [], "bycat": []}
            p10: dict[str, list[float]] = {"full": [], "bycat": []}
            scanned, fallbacks = [], 0
            for vector, label in zip(qvectors, query_labels, strict=True):
                for mode in ("full", "bycat"):
                    started = time.perf_counter()
                    (outcome,) = collection.search_detailed(
                        [vector], k=args.k, by_category=mode == "bycat"
                    )
                    rows[mode].append(time.perf_counter() - started)
                    hits = [r.category == label for r in outcome.results]
                    p10[mode].append(sum(hits) / args.k)
                    if mode == "bycat":
                        fallbacks += outcome.searched is None
                        scanned.append(collection.scanned_fraction(outcome.searched))
    full_ms = statistics.median(rows["full"]) * 1000
    bycat_ms = statistics.median(rows["bycat"]) * 1000
    print(
        json.dumps(
            {
                "model": args.model,
                "collection": len(train),
                "queries": len(query_labels),
                "classifier_train_seconds": round(train_seconds, 1),
                "classifier_accuracy": round(
                    float(np.mean([p == t for p, t in zip(predicted, query_labels, strict=True)])),
                    4,
                ),
                "scanned_fraction_mean": round(float(np.mean(scanned)), 4),
                "fallback_to_full_rate": round(fallbacks / len(query_labels), 4),
                "precision@10_full": round(float(np.mean(p10["full"])), 4),
                "precision@10_by_category": round(float(np.mean(p10["bycat"])), 4),
                "search_step_ms_p50_full": round(full_ms, 3),
                "search_step_ms_p50_by_category": round(bycat_ms, 3),
                "search_step_speedup": round(full_ms / bycat_ms, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
