"""Indexing speed: model-only throughput vs end-to-end `lookalike index`, re-run, memory.

    .venv/bin/python benchmarks/bench_index.py [--images DIR] [--limit N] [--model lite0]

Measured in one run, so the ratio is fair on a noisy machine:

1. model only: ONNX Runtime on ready uint8 batches (decoding excluded), images/s;
2. end to end: a fresh `lookalike index DIR` process (walk, decode, embed, store), images/s
   and the peak resident memory of that process;
3. re-run: a second `lookalike index DIR` process on the unchanged folder, wall seconds.

Default images: ../shared/datasets/caltech101 (9,144 JPEGs), as in BENCHMARKS.md.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lookalike import config
from lookalike.decode import load_image
from lookalike.indexer import walk_images
from lookalike.models import Embedder, builtin_spec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "caltech101"


def model_only(model: str, files: list[str], rounds: int) -> dict[str, float]:
    """Images/s of the model alone on ready pixels, in the configurations that matter.

    The best of them is the reference the pipeline is compared with.
    """
    spec = builtin_spec(model)
    pixels_32 = np.stack(
        [Embedder(spec).prepare(load_image(f, min_side=spec.input_size)) for f in files[:32]]
    )
    pixels_8 = pixels_32[:8]
    rates: dict[str, float] = {}
    shared = Embedder(spec)  # every core on one run
    for name, batch in (("all_cores_batch32", pixels_32), ("all_cores_batch8", pixels_8)):
        shared.embed(batch)
        rates[name] = len(batch) * rounds / _timed(lambda b=batch: shared.embed(b), rounds)
    single = Embedder(spec, threads=1)  # what indexing uses: one core per concurrent run
    single.embed(pixels_8)
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: single.embed(pixels_8), range(rounds * workers)))
        rates["one_core_per_run_batch8"] = 8 * rounds * workers / (time.perf_counter() - start)
    return rates


def _timed(fn: Callable[[], object], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return time.perf_counter() - start


# Runs `lookalike index` and then reports the process's peak resident memory (VmHWM, which
# exec resets, unlike getrusage's ru_maxrss, which can include the forking parent's pages).
_INDEX_CHILD = """
import sys
from lookalike.cli import main
code = main(sys.argv[1:])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print("peak_kb", hwm, file=sys.stderr)
sys.exit(code)
"""


def run_index(folder: Path, db: Path, model: str) -> tuple[dict[str, object], float, float]:
    """Run `lookalike index` as its own process: (summary, wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _INDEX_CHILD,
            "index",
            str(folder),
            "--db",
            str(db),
            "--model",
            model,
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    peak_kb = int(done.stderr.rsplit("peak_kb", 1)[1].split()[0])
    return json.loads(done.stdout), wall, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    files = [c.path for c in walk_images(args.images)]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {len(files)} images in {args.images}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LOOKALIKE_CACHE", str(config.cache_dir()))
        model_rates = model_only(args.model, files, args.rounds)
        model_rate = max(model_rates.values())
        db = Path(tmp) / "bench.db"
        summary, wall, peak_mb = run_index(args.images, db, args.model)
        _, rerun_wall, _ = run_index(args.images, db, args.model)
    embedded = int(summary["added"])  # type: ignore[call-overload]
    end_to_end = embedded / wall
    result = {
        "model": args.model,
        "images": len(files),
        "embedded": embedded,
        "skipped": len(summary["skipped"]),  # type: ignore[arg-type]
        "model_only_images_per_s": {k: round(v, 1) for k, v in model_rates.items()},
        "index_images_per_s_process_wall": round(end_to_end, 1),
        "index_images_per_s_reported": summary["images_per_second"],
        "ratio_to_best_model_only": round(end_to_end / model_rate, 3),
        "index_wall_s": round(wall, 1),
        "index_peak_rss_mb": round(peak_mb),
        "rerun_unchanged_wall_s": round(rerun_wall, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
