"""Query latency: decode a 1000 px JPEG, embed it, search 10,000 images.

    .venv/bin/python benchmarks/bench_query.py [--size 10000] [--runs 100] [--precision fp32 int8]

1. warm: one process, model loaded, index in memory; p50 / p95 of whole `search()` calls
   (decode + border test + embed + top-k + paths), for two queries: a photo (the default
   query localization leaves it whole: one network run, one top-k) and a picture on a wall
   (an object found: photo and object in one network run, two top-k searches); then the
   median of each stage of the photo's query alone (decode, border test, network + pooling,
   top-k, store), one after another in the same loop;
2. cold: a fresh `lookalike search` process per query, median wall time of several;

once per model precision (fp32, int8), in one run.

The collection holds 10,000 random unit vectors under made-up paths: search time depends on
their number and dimension, not their content. The queries are made from a real photo (the
bundled Caltech-101 panda) enlarged to 1000 px wide.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from common import make_collection, query_jpeg, wall_query_jpeg

from lookalike import Collection, config
from lookalike.encode.models import builtin_spec
from lookalike.image.decode import load_image
from lookalike.image.localization import find_object

T = TypeVar("T")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def timed(times: list[float], step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    start = time.perf_counter()
    result = step(*args, **kwargs)
    times.append(time.perf_counter() - start)
    return result


def measure(size: int, runs: int, cold_runs: int, precision: str) -> dict[str, object]:
    ms = 1000
    with tempfile.TemporaryDirectory() as tmp:
        db, query, wall = Path(tmp) / "bench.db", Path(tmp) / "query.jpg", Path(tmp) / "wall.jpg"
        make_collection(db, size, model=builtin_spec(config.DEFAULT_MODEL, precision))  # type: ignore[arg-type]
        query.write_bytes(query_jpeg(1000))
        wall.write_bytes(wall_query_jpeg(1000))
        stages: dict[str, list[float]] = {
            k: [] for k in ("decode", "border_test", "network", "topk", "store")
        }
        with Collection.open(db) as collection:
            photo_box = collection.search_detailed([query], k=10)[0].query_box  # warm-up
            wall_box = collection.search_detailed([wall], k=10)[0].query_box
            assert photo_box is None and wall_box is not None, (photo_box, wall_box)
            whole, on_wall, topk = [], [], []
            vector, _ = collection.query_vectors([query])
            encoder, snapshot = collection.embedder, collection.snapshot()
            for _ in range(runs):
                timed(whole, collection.search, query, k=10)
                timed(on_wall, collection.search, wall, k=10)
                timed(topk, collection.index().search, vector, 10)
                image = timed(stages["decode"], load_image, query, min_side=encoder.decode_side)
                timed(stages["border_test"], find_object, image)
                raw = timed(stages["network"], encoder.describe, [image]).vectors
                _, ids = timed(stages["topk"], snapshot.index.search, snapshot.encode(raw), 14)
                timed(stages["store"], collection.store.records, ids[0].tolist())
        cold = []
        for _ in range(cold_runs):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "lookalike.cli", "search", str(query), "--db", str(db)],
                check=True,
                capture_output=True,
            )
            cold.append(time.perf_counter() - start)
    return {
        "collection": size,
        "precision": precision,
        "query": "1000 px JPEG",
        "warm_search_ms_p50": round(percentile(whole, 50) * ms, 2),
        "warm_search_ms_p95": round(percentile(whole, 95) * ms, 2),
        "warm_object_query_ms_p50": round(percentile(on_wall, 50) * ms, 2),
        "warm_object_query_ms_p95": round(percentile(on_wall, 95) * ms, 2),
        "topk_only_ms_p50": round(percentile(topk, 50) * ms, 2),
        "photo_stages_ms_p50": {k: round(percentile(v, 50) * ms, 2) for k, v in stages.items()},
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
