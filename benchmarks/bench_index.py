"""Indexing speed: model-only throughput vs end-to-end `lookalike index`, re-run, memory.

    .venv/bin/python benchmarks/bench_index.py [--images DIR] [--model lite0]
        [--precision fp32 int8]

Measured in one run, for each precision, so the ratios are fair on a noisy machine:

1. model only: ONNX Runtime on ready uint8 batches (decoding excluded), images/s, batch 8
   on one thread, on two threads, and two one-thread runs at once (what indexing does);
2. end to end: a fresh `lookalike index DIR --precision P` process (walk, decode, embed,
   store), images/s, the CPU seconds it used per image (user + system: a figure that other
   load on the machine disturbs far less than the wall time) and its peak resident memory;
3. re-run: a second `lookalike index DIR` process on the unchanged folder, wall seconds.

Default images: ../shared/datasets/caltech101 (9,144 JPEGs), as in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lookalike import config
from lookalike.encode.models import Embedder, builtin_spec
from lookalike.image.decode import load_image
from lookalike.image.files import walk_images

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "caltech101"


def model_only(model: str, precision: str, files: list[str], rounds: int) -> dict[str, float]:
    """Images/s of the model alone on ready pixels, in the configurations that matter.

    The best of them is the reference the pipeline is compared with.
    """
    spec = builtin_spec(model, precision)  # type: ignore[arg-type]
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
    rates["one_thread_batch8"] = 8 * rounds / _timed(lambda: single.embed(pixels_8), rounds)
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


def run_index(
    folder: Path, db: Path, model: str, extra: tuple[str, ...] = ()
) -> tuple[dict[str, object], float, float, float]:
    """Run `lookalike index` as its own process: (summary, wall seconds, peak RSS in MB,
    CPU seconds: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_kb = int(done.stderr.rsplit("peak_kb", 1)[1].split()[0])
    return json.loads(done.stdout), wall, peak_kb / 1024, cpu


def measure(
    images: Path, files: list[str], model: str, precision: str, rounds: int
) -> dict[str, Any]:
    """Model-only rates, then `lookalike index` end to end and re-run, for one precision."""
    model_rates = model_only(model, precision, files, rounds)
    model_rate = max(model_rates.values())
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        extra = ("--precision", precision)
        summary, wall, peak_mb, cpu = run_index(images, db, model, extra)
        rerun_wall = run_index(images, db, model, extra)[1]
    embedded = int(summary["added"])  # type: ignore[call-overload]
    end_to_end = embedded / wall
    return {
        "model": model,
        "precision": precision,
        "images": len(files),
        "embedded": embedded,
        "skipped": len(summary["skipped"]),  # type: ignore[arg-type]
        "model_only_images_per_s": {k: round(v, 1) for k, v in model_rates.items()},
        "index_images_per_s_process_wall": round(end_to_end, 1),
        "index_images_per_s_reported": summary["images_per_second"],
        "ratio_to_best_model_only": round(end_to_end / model_rate, 3),
        "index_wall_s": round(wall, 1),
        "index_cpu_ms_per_image": round(1000 * cpu / embedded, 2),
        "index_peak_rss_mb": round(peak_mb),
        "rerun_unchanged_wall_s": round(rerun_wall, 2),
        "load_average_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    files = [c.path for c in walk_images(args.images)]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {len(files)} images in {args.images}; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    os.environ.setdefault("LOOKALIKE_CACHE", str(config.cache_dir()))
    results = []
    for precision in args.precision:
        results.append(measure(args.images, files, args.model, precision, args.rounds))
        print(json.dumps(results[-1], indent=2), flush=True)
    if len(results) > 1:
        base = results[0]
        for result in results[1:]:
            speed = (
                result["index_images_per_s_process_wall"] / base["index_images_per_s_process_wall"]
            )
            cpu = base["index_cpu_ms_per_image"] / result["index_cpu_ms_per_image"]
            print(
                f"{result['precision']} / {base['precision']}: index {speed:.2f}x, CPU {cpu:.2f}x"
            )


if __name__ == "__main__":
    main()
