"""Server memory under a burst of "more like this" region requests on one huge stored image.

    .venv/bin/python benchmarks/bench_region_memory.py [--requests 20]
    PYTHONPATH=OTHER/src .venv/bin/python benchmarks/bench_region_memory.py   # other code

A collection holds one 7000 x 7000 16-bit greyscale PNG (small on disk, 294 MB decoded).
``lookalike serve`` runs on it; ``--requests`` clients at once ask
``GET /collections/bench/images/1/similar?box=0,0,0.5,0.5`` (the stored file decoded for its
region). Prints the server's resident memory before, its peak (VmHWM) and after the burst, and
the slowest request, as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_serve import HOST, free_port, wait_ready
from hostile_corpus import _png

from lookalike import Collection


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = folder / "photos"
        photos.mkdir()
        (photos / "huge.png").write_bytes(_png(7000, 7000, 16, 0))
        db = folder / "bench.db"
        with Collection.open(db) as collection:
            collection.add([photos])
        port = free_port()
        env = dict(os.environ, XDG_DATA_HOME=str(folder / "data"))
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "lookalike.cli", "serve", "--db", str(db)),
                *("--collections", str(folder / "c"), "--host", HOST, "--port", str(port)),
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, server, timeout=300)
            before = memory_mb(server.pid, "VmRSS")
            took: list[float] = []
            statuses: list[int] = []

            def ask() -> None:
                connection = http.client.HTTPConnection(HOST, port, timeout=600)
                started = time.perf_counter()
                connection.request("GET", "/collections/bench/images/1/similar?box=0,0,0.5,0.5")
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
                took.append(time.perf_counter() - started)
                connection.close()

            clients = [threading.Thread(target=ask) for _ in range(args.requests)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            time.sleep(2)
            print(
                json.dumps(
                    {
                        "requests": args.requests,
                        "statuses": sorted(set(statuses)),
                        "rss_mb_before": before,
                        "rss_mb_peak": memory_mb(server.pid, "VmHWM"),
                        "rss_mb_after": memory_mb(server.pid, "VmRSS"),
                        "slowest_s": round(max(took), 1),
                        "load_average_1min": round(os.getloadavg()[0], 2),
                    },
                    indent=2,
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
