"""How hard the approximate index must look for near-duplicates (issue 23: IVF became the
approximate index, and its default search breadth made `lookalike duplicates` slow).

    .venv/bin/python benchmarks/sweep_duplicates.py --parquet /tmp/scale8/v100k.parquet \
        --work /tmp/dup23 --nprobe 4 8 16 32 128

Plants ``--planted`` near-duplicates (a row plus noise, cosine 0.93-0.995 with it) among the
vectors of ``--parquet`` (e.g. ``bench_scale.py make``), imports them (the approximate index
from 50,000 images), then times ``Collection.duplicates()`` at each IVF breadth (cells
scanned per image) and reports the groups found, and whether they are the widest breadth's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike import Collection, config
from lookalike.analysis import duplicates
from lookalike.encode.models import builtin_spec
from lookalike.index.ann import SearchSettings
from lookalike.pipeline import parquet_io


def planted(source: Path, out: Path, count: int) -> None:
    vectors = np.concatenate([v for _, v in parquet_io.iter_vectors(source)])
    rng = np.random.default_rng(5)
    rows = rng.choice(len(vectors), count, replace=False)
    noise = rng.standard_normal((count, vectors.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = vectors[rows] + rng.uniform(0.1, 0.4, (count, 1)).astype(np.float32) * noise
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    every = np.concatenate([vectors, copies])
    n, dims = every.shape
    table = pa.table(
        {
            "path": pa.array([f"/synthetic/{i:08}.jpg" for i in range(n)]),
            "vector": pa.ListArray.from_arrays(
                pa.array(np.arange(0, n * dims + 1, dims, dtype=np.int32)),
                pa.array(every.ravel(), type=pa.float32()),
            ),
            "size": pa.array(np.full(n, 1, np.int64)),
            "mtime_ns": pa.array(np.full(n, 1, np.int64)),
            "width": pa.array(np.full(n, 640, np.int32)),
            "height": pa.array(np.full(n, 480, np.int32)),
        },
        schema=parquet_io.schema(builtin_spec("efficientnet-lite0")),
    )
    pq.write_table(table, str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parquet", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--planted", type=int, default=2000)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 128])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    source, db = args.work / "planted.parquet", args.work / "planted.db"
    if not db.exists():
        planted(args.parquet, source, args.planted)
        lookalike = str(Path(sys.executable).with_name("lookalike"))
        subprocess.run([lookalike, "import", str(source), "--db", str(db)], check=True)
    report: dict[int, dict[str, object]] = {}
    found: dict[int, list[tuple[int, ...]]] = {}
    with Collection.open(db) as collection:
        for nprobe in sorted(args.nprobe):
            settings = SearchSettings(nprobe=nprobe, ef_search=config.DUPLICATE_EF_SEARCH)
            with mock.patch.object(duplicates, "_neighbour_search", lambda s=settings: s):
                started = time.perf_counter()
                groups = collection.duplicates()
                seconds = time.perf_counter() - started
            found[nprobe] = sorted(tuple(sorted(g.ids)) for g in groups)
            report[nprobe] = {"seconds": round(seconds, 1), "groups": len(groups)}
    widest = found[max(found)]
    for nprobe, row in report.items():
        row["same_as_widest"] = found[nprobe] == widest
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
