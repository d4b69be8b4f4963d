"""The Ray runner (``lookalike index --ray``) against the local indexer, on the same images.

    .venv/bin/python benchmarks/bench_ray.py [--images 2000] [--root ../shared/datasets/...]

Takes ``--images`` Caltech-101 photos spread over every category (every n-th file in path
order), indexes them into a new SQLite collection with the local indexer (threads, one core
each), then into another through a local Ray started on this machine's cores (one actor per
core, one ONNX session each); ``--repeats`` rounds, alternated, medians reported. Ray's
start-up is timed apart: on a cluster it is already running. Prints both times, images/s, the
overhead of Ray, and the core-seconds spent per image (what a cluster's worker time per image is
made of), as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike import Collection


class _WorkerCpu(logging.Handler):
    """Collects the workers' CPU seconds the Ray runner logs at the end of each run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("Ray: ") and isinstance(record.args, tuple):
            self.seconds.append(float(record.args[2]))


ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "caltech101"


def pick(root: Path, count: int) -> list[Path]:
    files = sorted(root.rglob("*.jpg"))
    step = max(1, len(files) // count)
    return files[::step][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=ROOT / "101_ObjectCategories")
    parser.add_argument("--repeats", type=int, default=4, help="rounds, each one of both")
    args = parser.parse_args()
    files = pick(args.root, args.images)
    cores = os.cpu_count() or 1

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - started
    worker_cpu = _WorkerCpu()
    runner_log = logging.getLogger("lookalike.pipeline.ray_runner")
    runner_log.addHandler(worker_cpu)
    runner_log.setLevel(logging.INFO)
    times: dict[str, list[float]] = {"local": [], "ray": []}
    first: dict[str, list[float]] = {"local": [], "ray": []}
    # CPU seconds of this process (the local indexer's threads; Ray's driver) per run
    cpu: dict[str, list[float]] = {"local": [], "ray": []}
    model_load_s: list[float] = []
    vectors: dict[str, np.ndarray] = {}
    # Alternated (local, Ray; then Ray, local; ...), so that other work on the machine and
    # any warming up weigh on both alike.
    for round_ in range(args.repeats):
        for runner in ("local", "ray") if round_ % 2 == 0 else ("ray", "local"):
            with tempfile.TemporaryDirectory() as tmp, Collection.open(Path(tmp) / "c.db") as c:
                loading = time.perf_counter()
                c.index_embedder  # noqa: B018  (model loaded before the clock starts)
                if runner == "local":
                    model_load_s.append(time.perf_counter() - loading)
                seen: list[float] = []

                def progress(n: int, seen: list[float] = seen) -> None:
                    if not seen:
                        seen.append(time.perf_counter())

                started, cpu_started = time.perf_counter(), time.process_time()
                report = c.add(files, ray="" if runner == "ray" else None, progress=progress)
                times[runner].append(time.perf_counter() - started)
                cpu[runner].append(time.process_time() - cpu_started)
                first[runner].append(seen[0] - started if seen else float("nan"))
                assert report.embedded == len(files), report
                vectors[runner] = c.store.load_vectors()[1]
            print(
                f"round {round_}: {runner} {times[runner][-1]:.1f} s"
                f" (first batch written after {first[runner][-1]:.1f} s)",
                file=sys.stderr,
            )
    ray.shutdown()
    local_s, ray_s = float(np.median(times["local"])), float(np.median(times["ray"]))
    local_vectors, ray_vectors = vectors["local"], vectors["ray"]

    same = bool(np.allclose(local_vectors, ray_vectors, atol=1e-5))
    n = len(files)
    local_first = float(np.median(first["local"]))
    ray_first = float(np.median(first["ray"]))

    def ms_per_image(seconds: list[float]) -> float:
        return round(1000 * float(np.median(seconds)) / n, 2)

    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {cores} cores, "
                f"Python {platform.python_version()}",
                "load_average_1min": round(os.getloadavg()[0], 2),
                "images": len(files),
                "rounds_local_s": [round(t, 1) for t in times["local"]],
                "rounds_ray_s": [round(t, 1) for t in times["ray"]],
                "first_batch_local_s": round(float(np.median(first["local"])), 2),
                "first_batch_ray_s": round(float(np.median(first["ray"])), 2),
                "same_vectors": same,
                "local_s": round(local_s, 1),
                "local_images_per_s": round(len(files) / local_s, 1),
                "ray_start_s": round(ray_start_s, 1),
                "ray_s": round(ray_s, 1),
                "ray_images_per_s": round(len(files) / ray_s, 1),
                "ray_over_local": round(ray_s / local_s, 3),
                "ray_overhead": round(ray_s / local_s - 1, 3),
                "ray_overhead_with_start": round((ray_s + ray_start_s) / local_s - 1, 3),
                # after the first batch is written: the pipeline full, start-up behind
                "steady_ray_over_local": round((ray_s - ray_first) / (local_s - local_first), 3),
                "local_model_load_s": round(float(np.median(model_load_s)), 2),
                "wall_core_ms_per_image_local": round(1000 * cores * local_s / n, 1),
                "wall_core_ms_per_image_ray": round(1000 * cores * ray_s / n, 1),
                # CPU time (measured, unlike wall time, hardly moved by the machine's load)
                "cpu_ms_per_image_local": ms_per_image(cpu["local"]),
                "cpu_ms_per_image_ray_workers": ms_per_image(worker_cpu.seconds),
                "cpu_ms_per_image_ray_driver": ms_per_image(cpu["ray"]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
