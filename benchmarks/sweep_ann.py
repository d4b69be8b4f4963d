"""Which FAISS index for the approximate search: recall@10 and search time per index kind.

    .venv/bin/python benchmarks/sweep_ann.py --db /tmp/scale8/c100k.db

On a collection built by ``bench_scale.py build`` (its PCA-256 vectors, read in batches), each
index factory string is built and searched with 200 real Caltech-101 vectors as queries;
recall@10 is against an exact scan of the same vectors. Times are in-process, all queries in
one call divided by their number.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from lookalike import Collection

KINDS = {
    "IVF512,SQ8": [("nprobe", 64), ("nprobe", 256)],
    "IVF512,Flat": [("nprobe", 64)],
    "HNSW16,SQ8": [("efSearch", 128)],
    "HNSW32,SQ8": [("efSearch", 128), ("efSearch", 256)],
    "HNSW32,Flat": [("efSearch", 128)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--real", type=Path, default=Path("/tmp/scale8/caltech_lite0_avg.npy"))
    args = parser.parse_args()
    with Collection.open(args.db) as collection:
        pca = collection.pca()
        assert pca is not None, "build the collection with bench_scale.py first"
        vectors = np.concatenate([pca.transform(v) for _, v in collection.store.vector_batches()])
    real = np.load(args.real)
    queries = pca.transform(real[np.random.default_rng(2).choice(len(real), 200, replace=False)])
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    for spec, settings in KINDS.items():
        index = faiss.index_factory(vectors.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        if spec.startswith("HNSW"):
            faiss.downcast_index(index).hnsw.efConstruction = 64
        started = time.perf_counter()
        index.train(vectors[:20_000])
        index.add(vectors)
        build = time.perf_counter() - started
        for name, value in settings:
            if name == "nprobe":
                faiss.extract_index_ivf(index).nprobe = value
            else:
                faiss.downcast_index(index).hnsw.efSearch = value
            started = time.perf_counter()
            _, found = index.search(queries, 10)
            per_query = (time.perf_counter() - started) / len(queries)
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
            print(
                json.dumps(
                    {
                        "index": spec,
                        name: value,
                        "recall@10": round(float(recall), 4),
                        "search_ms": round(1000 * per_query, 2),
                        "build_s": round(build, 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
