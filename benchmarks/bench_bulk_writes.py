"""The SQLite store's bulk write rate by page size: batches of 1280-d float32 rows written with
``Store.write_batch`` (one transaction each, as ``lookalike import`` writes them) into a new
collection file, for each page size given (``config.SQLITE_PAGE_SIZE`` chooses a new file's).

    flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_bulk_writes.py \\
        --pages 4096 8192 16384 65536 --rounds 2 --folder /tmp/bulk/pages
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from lookalike import config
from lookalike.store.records import EmbeddedImage
from lookalike.store.sqlite import Store


def rows_a_second(folder: Path, page_size: int, batches: int, rows: int, dims: int) -> float:
    """Rows a second writing ``batches`` batches of ``rows`` into a new file of that page size
    (the batches are made before the clock starts)."""
    config.SQLITE_PAGE_SIZE = page_size
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(rows, dims)).astype(np.float32)
    made = [
        [
            EmbeddedImage(f"/synthetic/{b}/{i:06}.jpg", 1, 1, 640, 480, vectors[i])
            for i in range(rows)
        ]
        for b in range(batches)
    ]
    store = Store(folder / "c.db")
    started = time.perf_counter()
    for batch in made:
        store.write_batch(batch, [])
    seconds = time.perf_counter() - started
    found = store._db.execute("PRAGMA page_size").fetchone()[0]
    store.close()
    assert found == page_size, (found, page_size)
    return batches * rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--rounds", type=int, default=2, help="each page size this many times")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dims", type=int, default=1280)
    parser.add_argument("--folder", type=Path, required=True, help="scratch (replaced)")
    args = parser.parse_args()
    load_before = [round(v, 1) for v in os.getloadavg()]
    results: dict[int, list[int]] = {size: [] for size in args.pages}
    for _ in range(args.rounds):
        for size in args.pages:  # interleaved: the machine's load falls on every size alike
            rate = rows_a_second(args.folder, size, args.batches, args.rows, args.dims)
            results[size].append(round(rate))
    shutil.rmtree(args.folder, ignore_errors=True)
    print(
        json.dumps(
            {
                "rows_a_second_by_page_size": results,
                "rows": args.batches * args.rows,
                "dims": args.dims,
                "load_average_before": load_before,
                "load_average_after": [round(v, 1) for v in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
