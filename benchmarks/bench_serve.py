"""Load test of ``lookalike serve``: searches by upload from concurrent clients, optionally
with writers uploading and deleting images at the same time.

    .venv/bin/python benchmarks/bench_serve.py [--size 10000] [--clients 8] [--seconds 20]
        [--writers 0]

Starts the server itself (a subprocess, ``lookalike serve`` on 127.0.0.1 and a free port; it
never talks to any other host) on a collection of ``--size`` images, then ``--clients``
threads each POST a 500 px JPEG to /collections/bench/search over their own keep-alive
connection, one request after the other, for ``--seconds``. Prints searches/s, latency
percentiles and the error count as JSON; exits 1 if any request failed. Bounded in time:
the server must be ready within 120 s, and the run stops after ``--seconds``.

The collection holds random unit vectors under made-up paths (as in bench_query.py): search
time depends on their number and dimension, not on their content. The query is a real
photo (the bundled panda) resized to 500 px wide; every request decodes and embeds it.

``--writers N`` adds N threads that each upload a new 320 x 240 JPEG (POST .../images, one
image per request) and, every third upload, delete an image they uploaded before, for the same
time as the searches. Any 5xx, from a search or a write, counts as an error.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from common import make_collection, query_jpeg
from PIL import Image

HOST = "127.0.0.1"  # only ever the local machine


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready in time")


def client(
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    until: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc))
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=30)
            continue
        elapsed = time.perf_counter() - started
        if response.status != 200 or len(json.loads(payload)["results"]) != 10:
            errors.append(f"{response.status} {payload[:200]!r}")
            continue
        latencies.append(elapsed)
    connection.close()


def noise_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


#: New images in every run (an image the collection already holds is "unchanged", not added).
RUN_SEED = time.time_ns() % 10**12


def writer(
    port: int, worker: int, until: float, done: list[str], errors: list[str], name: str = "bench"
) -> None:
    """Upload new images and delete some of them until ``until``; ``done`` gets one entry per
    acknowledged write."""
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    uploaded: list[int] = []
    i = 0
    while time.monotonic() < until:
        i += 1
        body, content_type = multipart("files", "w.jpg", noise_jpeg(RUN_SEED + worker * 10**6 + i))
        try:
            connection.request(
                "POST",
                f"/collections/{name}/images",
                body=body,
                headers={"Content-Type": content_type, "Content-Length": str(len(body))},
            )
            response = connection.getresponse()
            payload = response.read()
            if response.status != 201:
                errors.append(f"upload {response.status} {payload[:200]!r}")
                continue
            uploaded.append(json.loads(payload)["results"][0]["id"])
            done.append("upload")
            if i % 3 == 0:
                connection.request("DELETE", f"/collections/{name}/images/{uploaded.pop(0)}")
                response = connection.getresponse()
                payload = response.read()
                if response.status != 204:
                    errors.append(f"delete {response.status} {payload[:200]!r}")
                    continue
                done.append("delete")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc))
            connection.close()
            connection = http.client.HTTPConnection(HOST, port, timeout=60)
    connection.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), or NaN where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    port: int,
    clients: int,
    seconds: float,
    body: bytes,
    content_type: str,
    writers: int = 0,
    writes: list[str] | None = None,
    name: str = "bench",
) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    path = f"/collections/{name}/search?k=10"
    started = time.monotonic()
    until = started + seconds
    threads = [
        threading.Thread(
            target=client, args=(port, path, body, content_type, until, latencies, errors)
        )
        for _ in range(clients)
    ]
    threads += [
        threading.Thread(target=writer, args=(port, w, until, writes, errors, name))
        for w in range(writers)
        if writes is not None
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="images in the collection")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load not measured")
    parser.add_argument("--writers", type=int, default=0, help="threads uploading and deleting")
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help="serve this existing collection instead (e.g. one built by bench_scale.py)",
    )
    args = parser.parse_args()
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be within (0, 600]")

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.db"
        if args.db is None:
            make_collection(db, args.size)
        query = query_jpeg(500)
        body, content_type = multipart("file", "query.jpg", query)
        port = free_port()
        env = dict(os.environ, XDG_DATA_HOME=str(Path(tmp) / "data"))
        command = [sys.executable, "-m", "lookalike.cli", "serve", "--db", str(db)]
        command += ["--collections", str(Path(tmp) / "collections"), "--host", HOST]
        command += ["--port", str(port)]
        server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
        try:
            wait_ready(port, server)
            run_load(port, args.clients, args.warmup, body, content_type, name=db.stem)
            load_before = os.getloadavg()[0]
            cpu_before = cpu_seconds(server.pid)
            writes: list[str] = []
            latencies, errors, elapsed = run_load(
                port,
                args.clients,
                args.seconds,
                body,
                content_type,
                args.writers,
                writes,
                name=db.stem,
            )
            server_cpu = cpu_seconds(server.pid) - cpu_before
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "collection": str(args.db) if args.db else args.size,
        "query": f"{len(query) // 1024} KB JPEG, 500 px wide",
        "clients": args.clients,
        "writers": args.writers,
        "seconds": round(elapsed, 1),
        "searches": len(latencies),
        "searches_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "latency_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 1),
        "latency_ms_max": round(float(ms.max()), 1),
        "uploads": writes.count("upload"),
        "deletes": writes.count("delete"),
        "writes_per_s": round(len(writes) / elapsed, 1),
        "errors": len(errors),
        "errors_5xx": sum(" 5" in e[:12] or e.startswith("5") for e in errors),
        # CPU the server spent per search: less sensitive than the rate to other work
        # sharing the machine (the load average says how much there was).
        "server_cpu_ms_per_search": round(1000 * server_cpu / max(1, len(latencies)), 1),
        "load_average_1min_before": round(load_before, 2),
    }
    print(json.dumps(result, indent=2))
    for error in errors[:5]:
        print(f"error: {error}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
