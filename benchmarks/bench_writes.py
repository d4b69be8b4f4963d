"""Searches while a collection is written to, in one process (no HTTP): where the time goes.

    .venv/bin/python benchmarks/bench_writes.py [--size 10000] [--uploads 30]

Two threads search through the service's query batcher while the main thread uploads images
one at a time (``Service.store_uploads``) and deletes every third (``Service.delete_image``).
Prints search latency percentiles and the time of each upload, deletion and of taking the
search snapshot right after a change, as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import make_collection, query_jpeg
from PIL import Image

from lookalike.image.decode import load_image
from lookalike.service import ServiceSettings
from lookalike.service.batcher import SearchOptions
from lookalike.service.core import Service


def noise_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--uploads", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        make_collection(db, args.size)
        service = Service(ServiceSettings(collections_dir=Path(tmp) / "c", db=db, warm_up=False))
        service.start()
        query = load_image(query_jpeg(500), min_side=224)
        latencies: list[float] = []
        times: dict[str, list[float]] = {"upload": [], "delete": [], "snapshot": []}
        stop = threading.Event()
        with service.collections.lease("bench") as collection:
            batcher = service.batcher(collection.spec)
            batcher.submit(collection, query, SearchOptions(k=10)).result()

            def searcher() -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    batcher.submit(collection, query, SearchOptions(k=10)).result()
                    latencies.append(time.perf_counter() - started)

            threads = [threading.Thread(target=searcher) for _ in range(2)]
            for thread in threads:
                thread.start()
            uploaded: list[int] = []

            def timed(kind: str, work: object) -> None:
                started = time.perf_counter()
                work()  # type: ignore[operator]
                times[kind].append(time.perf_counter() - started)

            for i in range(args.uploads):
                started = time.perf_counter()
                report = service.store_uploads("bench", [("w.jpg", noise_jpeg(i))])
                times["upload"].append(time.perf_counter() - started)
                uploaded.append(report.results[0].id or 0)
                timed("snapshot", collection.snapshot)
                if i % 3 == 2:
                    timed("delete", lambda: service.delete_image("bench", uploaded.pop(0)))
                    timed("snapshot", collection.snapshot)
            stop.set()
            for thread in threads:
                thread.join()
        service.stop()
    ms = np.array(latencies) * 1000
    result: dict[str, object] = {
        "collection": args.size,
        "searches": len(latencies),
        "search_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "search_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "search_ms_max": round(float(ms.max()), 1),
    }
    for kind, values in times.items():
        result[f"{kind}_ms_p50"] = round(statistics.median(values) * 1000, 1)
        result[f"{kind}_ms_max"] = round(max(values) * 1000, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
