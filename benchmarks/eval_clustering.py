"""Clustering quality on Caltech-101: purity and NMI against the true categories.

    .venv/bin/python benchmarks/eval_clustering.py [--db /tmp/caltech_clu.db] [--seeds 3]

Caltech-101 (../shared/datasets/caltech101) is indexed into --db if it is not there yet
(default model). Then, on the stored vectors:

1. k-means, k = 101 on the 8,677 images of the 101 categories (BACKGROUND_Google left out)
   and k = 102 on all 9,144 (clutter counted as a category), on the full 1280-d vectors and
   after PCA to 128 (and 64) dims; mean and spread over --seeds seeds, with wall time;
2. HDBSCAN (`--auto`), after PCA to 32 / 64 / 128 dims, min_cluster_size 5 and 10: clusters
   found, noise fraction, purity and NMI over the clustered images, NMI over all images
   with noise as one more cluster, and k-means' purity and NMI on the same clustered images;
3. the command itself: `lookalike cluster --k 102 --sheets DIR` on a copy of the collection
   with the labels set, end to end (clustering, storing, 102 contact sheets).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike import Collection
from lookalike.analysis.clustering import NOISE, cluster_quality, cluster_vectors

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "caltech101"
BACKGROUND = "BACKGROUND_Google"


def load(db: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, vectors and true categories of the indexed Caltech-101 images."""
    with Collection.open(db) as collection:
        if len(collection) == 0:
            collection.add([DATA / "101_ObjectCategories"])
        ids, vectors = collection.store.load_vectors()
        paths = collection.store.paths(ids.tolist())
    root = DATA.resolve()
    with (root / "labels.csv").open(newline="") as handle:
        labels = {
            os.path.abspath(root / r["path"]): r["class_name"] for r in csv.DictReader(handle)
        }
    truth = np.array([labels[paths[int(i)]] for i in ids])
    return ids, vectors, truth


def timed_clusters(vectors: np.ndarray, **options: object) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    labels = cluster_vectors(vectors, **options)  # type: ignore[arg-type]
    return labels, time.perf_counter() - started


def mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def kmeans_rows(vectors: np.ndarray, truth: np.ndarray, seeds: int) -> list[dict[str, object]]:
    rows = []
    keep = truth != BACKGROUND
    for what, k, subset in (("101 categories", 101, keep), ("all, clutter as 102nd", 102, None)):
        chosen = vectors if subset is None else vectors[subset]
        labels_true = truth if subset is None else truth[subset]
        for dims in (0, 128, 64):
            purity, nmi, seconds = [], [], []
            for seed in range(seeds):
                labels, elapsed = timed_clusters(
                    chosen, k=k, method="kmeans", pca_dims=dims, random_state=seed
                )
                quality = cluster_quality(labels, labels_true)
                purity.append(quality.purity)
                nmi.append(quality.nmi)
                seconds.append(elapsed)
            row = {
                "images": what,
                "n": len(chosen),
                "k": k,
                "dims": dims or chosen.shape[1],
                "purity": mean_sd(purity),
                "nmi": mean_sd(nmi),
                "seconds": round(statistics.median(seconds), 2),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def hdbscan_rows(vectors: np.ndarray, truth: np.ndarray) -> list[dict[str, object]]:
    from sklearn.metrics import normalized_mutual_info_score

    rows = []
    kmeans = cluster_vectors(vectors, k=102, method="kmeans", pca_dims=128, random_state=0)
    for dims in (32, 64, 128):
        for size in (5, 10):
            labels, elapsed = timed_clusters(
                vectors, k=None, method="hdbscan", pca_dims=dims, min_cluster_size=size
            )
            quality = cluster_quality(labels, truth)
            clustered = labels != NOISE
            versus = cluster_quality(kmeans[clustered], truth[clustered])
            codes = np.unique(truth, return_inverse=True)[1]
            row = {
                "dims": dims,
                "min_cluster_size": size,
                "clusters": int(labels.max() + 1),
                "noise_fraction": round(quality.noise_fraction, 4),
                "purity": round(quality.purity, 4),
                "nmi": round(quality.nmi, 4),
                "nmi_all_noise_as_cluster": round(normalized_mutual_info_score(codes, labels), 4),
                "kmeans102_on_same_images": {
                    "purity": round(versus.purity, 4),
                    "nmi": round(versus.nmi, 4),
                },
                "seconds": round(elapsed, 2),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def command_row(db: Path) -> dict[str, object]:
    """`lookalike cluster --k 102 --sheets DIR --json` on a labelled copy, as a user runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "c.db"
        shutil.copy(db, copy)
        root = DATA.resolve()
        with Collection.open(copy) as collection, (root / "labels.csv").open() as handle:
            labels = {str(root / r["path"]): r["class_name"] for r in csv.DictReader(handle)}
            collection.store.set_labels(labels)
        command = [sys.executable, "-m", "lookalike.cli", "cluster", "--db", str(copy)]
        command += ["--k", "102", "--sheets", str(Path(tmp) / "sheets"), "--json"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        report = json.loads(done.stdout)
    row = {
        "command": "lookalike cluster --k 102 --sheets DIR",
        "process_seconds": round(seconds, 1),
        "clustering_seconds": report["seconds"],
        "sheets": len(report["sheets"]),
        "quality": report["quality"],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/caltech_clu.db"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    _, vectors, truth = load(args.db)
    figures = {
        "kmeans": kmeans_rows(vectors, truth, args.seeds),
        "hdbscan": hdbscan_rows(vectors, truth),
        "command": command_row(args.db),
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
