"""Near-duplicate search at scale: time and peak memory on 100,000 vectors of 1280 dims.

    .venv/bin/python benchmarks/bench_duplicates.py [--n 100000] [--dim 1280] [--cli]

1. in memory: random unit vectors (float32, 0.51 GB at the defaults) with planted
   near-duplicates (pairs and triples at cosine ~0.95), then
   :func:`lookalike.analysis.duplicates.find_duplicates` at the default threshold; wall time, and
   the process's peak resident memory (VmHWM) before and after the search. Checks that exactly
   the planted groups come back.
2. ``--cli``: the same vectors written to a collection file, then a fresh
   ``lookalike duplicates --json`` process on it: wall time and that process's VmHWM (this
   includes loading the vectors from SQLite).
3. ``--db DB``: only a fresh ``lookalike duplicates --json`` process on an existing
   collection, e.g. the million-image one of ``bench_scale.py`` (issue 8's floor: under 10
   minutes and 4 GB); a collection of approximate-search size takes each image's nearest
   neighbours from its index instead of scoring all pairs:

       flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_duplicates.py \
           --db /tmp/scale8/c1m.db

Random vectors are as hard as real ones here: the work is the same N^2 / 2 dot products
whatever the content, and there are no accidental pairs to slow the grouping.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike import config
from lookalike.analysis.duplicates import find_duplicates


def vm_hwm_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_vectors(n: int, dim: int, planted: int, seed: int = 0) -> tuple[np.ndarray, set]:
    """Unit vectors with ``planted`` pairs and ``planted // 5`` triples of near-duplicates;
    built in float32 chunks so no float64 copy of the whole matrix ever exists."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 10_000):
        chunk = rng.standard_normal((min(10_000, n - start), dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[start : start + len(chunk)] = chunk
    rows = rng.choice(n, size=2 * planted + 3 * (planted // 5), replace=False)
    groups: set[frozenset[int]] = set()
    position = 0
    for size in [2] * planted + [3] * (planted // 5):
        members = rows[position : position + size]
        position += size
        for member in members[1:]:
            noisy = vectors[members[0]] + 0.01 * rng.standard_normal(dim, dtype=np.float32)
            vectors[member] = noisy / np.linalg.norm(noisy)
        groups.add(frozenset(int(m) for m in members))
    return vectors, groups


def write_collection(db: Path, vectors: np.ndarray) -> None:
    from lookalike import Collection
    from lookalike.store.records import EmbeddedImage

    with Collection.open(db) as collection:
        for start in range(0, len(vectors), 5000):
            collection.store.write_batch(
                [
                    EmbeddedImage(f"/collection/{start + i:06}.jpg", 1, 1, 640, 480, v)
                    for i, v in enumerate(vectors[start : start + 5000])
                ],
                [],
            )


CHILD = """
import json, sys, time
from pathlib import Path
from lookalike.cli import main
started = time.perf_counter()
code = main(["duplicates", "--db", sys.argv[1], "--json"])
elapsed = time.perf_counter() - started
hwm = next(int(l.split()[1]) / 1024 for l in Path("/proc/self/status").read_text().splitlines()
           if l.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": elapsed, "vm_hwm_mb": hwm}), file=sys.stderr)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--planted", type=int, default=50, help="planted pairs")
    parser.add_argument("--block-elements", type=int, default=config.DUPLICATE_BLOCK_ELEMENTS)
    parser.add_argument("--cli", action="store_true", help="also time `lookalike duplicates`")
    parser.add_argument("--db", type=Path, help="only time `lookalike duplicates` on this")
    args = parser.parse_args()
    if args.db is not None:
        print(json.dumps(time_cli(args.db), indent=2))
        return

    vectors, planted = make_vectors(args.n, args.dim, args.planted)
    before = vm_hwm_mb()
    started = time.perf_counter()
    groups = find_duplicates(
        np.arange(args.n),
        vectors,
        threshold=config.DUPLICATE_THRESHOLD,
        block_elements=args.block_elements,
    )
    seconds = time.perf_counter() - started
    after = vm_hwm_mb()
    found = {frozenset(g.ids) for g in groups}
    result: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "n": args.n,
        "dim": args.dim,
        "vectors_mb": round(vectors.nbytes / 2**20, 1),
        "block_elements": args.block_elements,
        "planted_groups": len(planted),
        "found_groups": len(found),
        "exactly_the_planted": found == planted,
        "seconds": round(seconds, 1),
        "pairs_per_second": round(args.n * (args.n - 1) / 2 / seconds),
        "vm_hwm_before_mb": round(before),
        "vm_hwm_after_mb": round(after),
    }
    if args.cli:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            started = time.perf_counter()
            write_collection(db, vectors)
            result["cli_write_seconds"] = round(time.perf_counter() - started, 1)
            del vectors
            result.update(time_cli(db))
    print(json.dumps(result, indent=2))


def time_cli(db: Path) -> dict[str, object]:
    """A fresh `lookalike duplicates --json` process on ``db``: wall time, peak memory."""
    load = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(db)], capture_output=True, text=True, check=True
    )
    child = json.loads(done.stderr.strip().splitlines()[-1])
    output = json.loads(done.stdout)
    return {
        "cli_images": output["images"],
        "cli_process_seconds": round(time.perf_counter() - started, 1),
        "cli_duplicates_seconds": round(child["seconds"], 1),
        "cli_vm_hwm_mb": round(child["vm_hwm_mb"]),
        "cli_groups": len(output["groups"]),
        "cli_images_in_groups": sum(g["size"] for g in output["groups"]),
        "load_average_before_after": [round(load[0], 1), round(os.getloadavg()[0], 1)],
    }


if __name__ == "__main__":
    main()
