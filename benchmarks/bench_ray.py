"""``lookalike index --ray`` against the local indexer, as a user runs them: whole commands.

    .venv/bin/python benchmarks/bench_ray.py [--images 6000] [--repeats 2] [--kill]

Takes ``--images`` Caltech-101 photos spread over every category (every n-th file in path
order, linked into one folder) and indexes them into a new SQLite collection with
``lookalike index DIR`` and with ``lookalike index DIR --ray`` (a local Ray on this machine's
cores, started by the command: start-up included), rounds alternated, medians reported.
Each command runs with ``-v``: the Ray runner logs when it joined Ray, when its first worker
was ready and the CPU seconds its workers spent. CPU per image: the workers' own (Ray), and
the local command's CPU less that of a run with nothing to do (imports, planning).

``--kill``: one more Ray run in which one worker process is killed (SIGKILL) half-way; it
reports the time, the files sent again and whether every file was indexed exactly once.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "caltech101"


def pick(root: Path, count: int) -> list[Path]:
    files = sorted(root.rglob("*.jpg"))
    step = max(1, len(files) // count)
    return files[::step][:count]


def link_folder(files: list[Path], folder: Path) -> None:
    folder.mkdir()
    for i, file in enumerate(files):
        (folder / f"{i:05}_{file.parent.name}_{file.name}").symlink_to(file)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def index(folder: Path, db: Path, ray: bool, on_start=None) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Run ``lookalike index`` once; its wall time, CPU, summary and Ray's logged figures."""
    command = [sys.executable, "-m", "lookalike.cli", "index", str(folder), "--db", str(db)]
    command += ["--json", "-v"] + (["--ray"] if ray else [])
    cpu, started = children_cpu(), time.perf_counter()
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if on_start is not None:
        on_start(run.pid)
    out, err = run.communicate()
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(err[-3000:])
    found: dict[str, object] = {
        "wall_s": wall,
        "cpu_s": children_cpu() - cpu,
        "summary": json.loads(out),
    }
    for name, pattern in {
        "joined_s": r"Ray: joined .* in ([\d.]+) s",
        "first_worker_s": r"the first ready after ([\d.]+) s",
        "worker_cpu_s": r"([\d.]+) CPU s on the workers",
    }.items():
        match = re.search(pattern, err)
        if match:
            found[name] = float(match.group(1))
    return found


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, grew = {pid}, True
    while grew:
        children = {p for p, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return sorted(found - {pid})


def kill_a_worker_after(seconds: float, killed: list[float]):  # type: ignore[no-untyped-def]
    """A function that, given the command's pid, kills one of its embedding workers."""

    def start(pid: int) -> None:
        def kill() -> None:
            started = time.perf_counter()
            time.sleep(seconds)
            while time.perf_counter() - started < seconds + 60:
                for child in descendants(pid):
                    try:
                        title = Path(f"/proc/{child}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if b"EmbedWorker.embed" in title:
                        os.kill(child, signal.SIGKILL)
                        killed.append(time.perf_counter() - started)
                        return
                time.sleep(0.01)

        threading.Thread(target=kill, daemon=True).start()

    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--root", type=Path, default=ROOT / "101_ObjectCategories")
    parser.add_argument("--repeats", type=int, default=2, help="rounds, each one of both")
    parser.add_argument("--kill", action="store_true", help="and a Ray run with a worker killed")
    args = parser.parse_args()
    files = pick(args.root, args.images)
    n = len(files)
    if n == 0:
        parser.error(f"no .jpg files below {args.root} (--root)")
    runs: dict[str, list[dict[str, object]]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        link_folder(files, folder)
        for round_ in range(args.repeats):
            for runner in ("local", "ray") if round_ % 2 == 0 else ("ray", "local"):
                db = Path(tmp) / f"{runner}{round_}.db"
                runs[runner].append(index(folder, db, ray=runner == "ray"))
                print(
                    f"round {round_}: {runner} {runs[runner][-1]['wall_s']:.1f} s", file=sys.stderr
                )
        idle = index(folder, Path(tmp) / "local0.db", ray=False)  # nothing to do: fixed costs
        kill: dict[str, object] = {}
        if args.kill:
            killed: list[float] = []
            db = Path(tmp) / "kill.db"
            local_s = float(np.median([r["wall_s"] for r in runs["local"]]))
            run = index(folder, db, ray=True, on_start=kill_a_worker_after(local_s / 2, killed))
            summary = run["summary"]
            assert isinstance(summary, dict)
            with sqlite3.connect(db) as con:
                rows, distinct = con.execute(
                    "SELECT count(*), count(DISTINCT path) FROM images"
                ).fetchone()
            kill = {
                "killed_after_s": round(killed[0], 1) if killed else None,
                "wall_s": round(float(run["wall_s"]), 1),  # type: ignore[arg-type]
                "added": summary["added"],
                "files_sent_again": len(summary["retried"]),
                "rows": rows,
                "distinct_paths": distinct,
            }

    def median(runner: str, key: str) -> float:
        return float(np.median([float(r[key]) for r in runs[runner] if key in r]))  # type: ignore[arg-type]

    local_s, ray_s = median("local", "wall_s"), median("ray", "wall_s")
    local_cpu_ms = 1000 * (median("local", "cpu_s") - float(idle["cpu_s"])) / n  # type: ignore[arg-type]
    worker_cpu_ms = 1000 * median("ray", "worker_cpu_s") / n
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                "images": n,
                "rounds_local_s": [round(float(r["wall_s"]), 1) for r in runs["local"]],  # type: ignore[arg-type]
                "rounds_ray_s": [round(float(r["wall_s"]), 1) for r in runs["ray"]],  # type: ignore[arg-type]
                "local_s": round(local_s, 1),
                "ray_s": round(ray_s, 1),
                "ray_speed_vs_local": round(local_s / ray_s, 3),
                "idle_command_s": round(float(idle["wall_s"]), 1),  # type: ignore[arg-type]
                "ray_joined_s": round(median("ray", "joined_s"), 2),
                "ray_first_worker_s": round(median("ray", "first_worker_s"), 2),
                "cpu_ms_per_image_local": round(local_cpu_ms, 2),
                "cpu_ms_per_image_ray_workers": round(worker_cpu_ms, 2),
                "ray_worker_cpu_vs_local": round(worker_cpu_ms / local_cpu_ms, 3),
                "local_command_cpu_s": round(median("local", "cpu_s"), 1),
                "kill": kill,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
