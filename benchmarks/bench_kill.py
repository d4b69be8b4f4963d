"""kill -9 while indexing: no corrupt store, nothing redone, the same vectors.

    .venv/bin/python benchmarks/bench_kill.py [--images DIR] [--limit 800] [--kills 24]

A reference `lookalike index` runs undisturbed. Then, on a fresh collection, `lookalike
index` is started again and again, each time killed (SIGKILL) at a random moment (during
start-up or in its share of the work left), until ``--kills`` kills are done, and
then left to finish. After every kill: `PRAGMA
integrity_check`, and every row committed before that run must be there unchanged (same
change sequence number, same vector: not redone). At the end every vector must be
bit-identical to the reference's.

Default images: the first ``--limit`` JPEGs of ../shared/datasets/caltech101.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "caltech101"


def _rows(db: Path) -> dict[str, tuple[int, bytes]]:
    """path -> (change sequence number, vector) of every indexed image."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    try:
        return {
            str(path): (seq, bytes(vector))
            for path, seq, vector in conn.execute("SELECT path, seq, vector FROM images")
        }
    except sqlite3.OperationalError:  # killed before the schema was committed
        return {}
    finally:
        conn.close()


def _integrity(db: Path) -> str:
    if not db.exists():
        return "ok"
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _index(folder: Path, db: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "lookalike.cli", "index", str(folder), "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=800)
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-"))
    folder = work / "images"
    folder.mkdir()
    sources = sorted(args.images.rglob("*.jpg"))[: args.limit]
    for number, source in enumerate(sources):
        shutil.copyfile(source, folder / f"{number:05}.jpg")

    started = time.perf_counter()
    reference = _index(folder, work / "ref.db")
    reference.wait()
    full_run = time.perf_counter() - started
    expected = _rows(work / "ref.db")
    print(f"{len(sources)} images; undisturbed run {full_run:.1f} s, {len(expected)} indexed")

    empty = work / "empty"
    empty.mkdir()
    started = time.perf_counter()
    _index(empty, work / "empty.db").wait()
    startup = time.perf_counter() - started  # model load, store: before any image
    rate = len(sources) / max(full_run - startup, 0.1)

    db = work / "killed.db"
    kills = corrupt = redone = 0
    progress = []
    while kills < args.kills:
        before = _rows(db)
        if len(before) == len(expected):
            print("collection complete before all kills were done")
            break
        process = _index(folder, db)
        # Anywhere in the start-up, or in this kill's share of the work left: every kill
        # lands before the collection is complete, some before any batch is committed.
        share = (len(expected) - len(before)) / rate / (args.kills - kills + 1)
        time.sleep(rng.uniform(0.2, 1.0) * startup + rng.uniform(0.0, 1.0) * share)
        if process.poll() is not None:
            continue  # finished before the kill: not counted
        process.kill()
        process.wait()
        kills += 1
        if _integrity(db) != "ok":
            corrupt += 1
        after = _rows(db)
        redone += sum(1 for path, row in before.items() if after.get(path) != row)
        progress.append(len(after))
    final = _index(folder, db)
    final.wait()
    rows = _rows(db)
    different = sum(
        1 for path, (_, vector) in expected.items() if rows.get(path, (0, b""))[1] != vector
    )
    print(f"start-up {startup:.1f} s; kills {kills}, rows after each kill: {progress}")
    print(
        f"corrupt stores {corrupt}, committed rows redone or changed {redone}, "
        f"final exit {final.returncode}, indexed {len(rows)} of {len(expected)}, "
        f"vectors not bit-identical to the undisturbed run: {different}"
    )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
