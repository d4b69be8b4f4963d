"""Retrieval quality of the compact vectors an approximate index holds (Caltech-101).

    .venv/bin/python benchmarks/eval_compression.py [--vectors caltech.npy --paths paths.npy]

The protocol of docs/EVALUATION.md (leave-one-out, every image a query but the
BACKGROUND_Google distractors; mAP, precision@10, top-1) on the default Lite0 vectors of the
Caltech-101 photos, stored as: float32 (today's exact index), PCA-256 float32, and PCA-256 in
float16 or 8-bit scalar quantization (FAISS ``SQfp16`` / ``SQ8``, trained on the collection).
Each compressed vector is encoded and decoded with FAISS, so the scores are what the index
computes (the queries are decoded too here, which can only lower the figures).
The vectors: an .npy of the photos' Lite0 vectors and an .npy of their paths (as
`lookalike embed ../shared/datasets/caltech101 --out caltech.parquet` writes them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import faiss
import numpy as np

from lookalike.analysis.evaluate import leave_one_out
from lookalike.index import pca as compression


def quantized(vectors: np.ndarray, kind: str) -> np.ndarray:
    index = faiss.index_factory(vectors.shape[1], kind, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    return index.sa_decode(index.sa_encode(vectors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, default=Path("/tmp/scale8/caltech_lite0_avg.npy"))
    parser.add_argument("--paths", type=Path, default=Path("/tmp/scale8/caltech_paths.npy"))
    args = parser.parse_args()
    vectors = np.load(args.vectors).astype(np.float32)
    paths = np.load(args.paths)
    caltech = np.array(["/caltech101/" in str(p) for p in paths])
    vectors, paths = vectors[caltech], paths[caltech]
    labels = [Path(str(p)).parent.name for p in paths]
    pca = compression.fit(vectors, 256)
    reduced = pca.transform(vectors)
    configs = {
        "float32, 1280 dims (exact index today)": (vectors, 1280 * 4),
        "float32, PCA-256": (reduced, 256 * 4),
        "float16, PCA-256 (SQfp16)": (quantized(reduced, "SQfp16"), 256 * 2),
        "8-bit, PCA-256 (SQ8)": (quantized(reduced, "SQ8"), 256),
        "8-bit, 1280 dims (SQ8)": (quantized(vectors, "SQ8"), 1280),
    }
    rows = []
    for name, (v, size) in configs.items():
        scores = leave_one_out(v, labels, distractors=frozenset({"BACKGROUND_Google"}))
        rows.append(
            {
                "config": name,
                "mAP": round(scores.mean_average_precision, 4),
                "P@10": round(scores.precision_at_10, 4),
                "top-1": round(scores.top1_accuracy, 4),
                "vector_bytes": size,
                "queries": scores.queries,
            }
        )
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
