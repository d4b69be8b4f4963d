"""Query latency: decode a 1000 px JPEG, embed it, search 10,000 images.

    .venv/bin/python benchmarks/bench_query.py [--size 10000] [--runs 100] [--precision fp32 int8]

1. warm: one process, model loaded, index in memory; p50 / p95 of whole `search()` calls
   (decode + embed + top-k + paths), and of the top-k step alone;
2. cold: a fresh `lookalike search` process per query, median wall time of several;

once per model precision (fp32, int8), in one run.

The collection holds 10,000 random unit vectors under made-up paths: search time depends on
their number and dimension, not their content. The query is a real photo (Caltech-101, from
../shared/datasets if present, else the bundled sample) enlarged to 1000 px wide.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import make_collection, query_jpeg

from lookalike import Collection, config
from lookalike.models import builtin_spec


def make_query(path: Path) -> None:
    path.write_bytes(query_jpeg(1000))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure(size: int, runs: int, cold_runs: int, precision: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        db, query = Path(tmp) / "bench.db", Path(tmp) / "query.jpg"
        make_collection(db, size, model=builtin_spec(config.DEFAULT_MODEL, precision))  # type: ignore[arg-type]
        make_query(query)
        with Collection.open(db) as collection:
            collection.search(query, k=10)  # warm-up: model and index loaded
            whole, topk = [], []
            vector, _ = collection.query_vectors([query])
            for _ in range(runs):
                start = time.perf_counter()
                collection.search(query, k=10)
                whole.append(time.perf_counter() - start)
                start = time.perf_counter()
                collection.index().search(vector, 10)
                topk.append(time.perf_counter() - start)
        cold = []
        for _ in range(cold_runs):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "lookalike.cli", "search", str(query), "--db", str(db)],
                check=True,
                capture_output=True,
            )
            cold.append(time.perf_counter() - start)
    ms = 1000
    return {
        "collection": size,
        "precision": precision,
        "query": "1000 px JPEG",
        "warm_search_ms_p50": round(percentile(whole, 50) * ms, 2),
        "warm_search_ms_p95": round(percentile(whole, 95) * ms, 2),
        "topk_only_ms_p50": round(percentile(topk, 50) * ms, 2),
        "cold_process_s_median": round(statistics.median(cold), 3),
        "cold_process_s_max": round(max(cold), 3),
        "load_average_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"])
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f"; load average before: {os.getloadavg()[0]:.2f}"
    )
    for precision in args.precision:
        result = measure(args.size, args.runs, args.cold_runs, precision)
        print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
