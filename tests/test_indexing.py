"""Incremental, resumable indexing that survives bad files."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from lookalike import Collection
from tests.conftest import make_image


def _bad_files(folder: Path) -> dict[str, str]:
    """Bad files of every kind, each named as an image; returns name -> reason fragment."""
    folder.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(good, "JPEG")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("hello, I am not an image\n" * 20)
    (folder / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "random.gif").write_bytes(os.urandom(4096))
    return {"empty.jpg": "empty", "text.png": "", "truncated.jpg": "", "random.gif": ""}


def test_bad_files_are_skipped_with_reasons_and_the_rest_indexed(
    photos: Path, tmp_path: Path
) -> None:
    bad = _bad_files(photos / "bad")
    # a WEBP named .jpg is not bad: decoded by content
    Image.open(photos / "cup" / "image_0002.jpg").save(photos / "bad" / "webp.jpg", "WEBP")
    with Collection.open(tmp_path / "c.db") as collection:
        report = collection.add([photos])
        skipped = {Path(p).name: reason for p, reason in report.skipped}
        assert set(skipped) == set(bad)
        assert all(reason for reason in skipped.values())
        assert "empty" in skipped["empty.jpg"]
        assert report.added == 31
        assert len(collection) == 31
        # unchanged bad files are remembered, not decoded again
        again = collection.add([photos])
        assert (again.added, again.updated, again.skipped) == (0, 0, [])
        assert (again.unchanged, again.skipped_before) == (31, len(bad))


def test_incremental_add_change_remove(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    for i in range(6):
        make_image(folder / f"{i}.jpg", seed=i)
    with Collection.open(tmp_path / "c.db") as collection:
        assert collection.add([folder]).added == 6
        first = collection.store.lookup(str(folder / "0.jpg"))
        # one new, one changed (different content and mtime), one deleted
        make_image(folder / "new.png", seed=100, fmt="PNG")
        make_image(folder / "0.jpg", seed=200, size=(80, 80))
        os.utime(folder / "0.jpg", ns=(1, 1_000_000_000))
        (folder / "5.jpg").unlink()
        report = collection.add([folder])
        assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 4)
        assert len(collection) == 6
        second = collection.store.lookup(str(folder / "0.jpg"))
        assert first is not None and second is not None
        assert first[0] == second[0]  # same id, new vector
        assert not (first[1] == second[1]).all()
        assert collection.store.lookup(str(folder / "5.jpg")) is None


def test_pruning_is_limited_to_the_folders_given(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "ab"  # "ab" shares a prefix with "a"
    for i in range(2):
        make_image(a / f"{i}.jpg", seed=i)
        make_image(b / f"{i}.jpg", seed=10 + i)
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([a, b])
        (a / "0.jpg").unlink()
        report = collection.add([a])
        assert report.removed == 1
        assert len(collection) == 3  # b untouched


def test_files_are_never_modified(photos: Path, tmp_path: Path) -> None:
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in photos.rglob("*") if p.is_file()}
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos])
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in photos.rglob("*") if p.is_file()}
    assert before == after


def test_other_model_on_existing_collection_is_refused(tmp_path: Path) -> None:
    Collection.open(tmp_path / "c.db").close()
    with pytest.raises(ValueError, match="built with"):
        Collection.open(tmp_path / "c.db", model="lite2")


_SLOW_INDEX = """
import sys, time
import lookalike.pipeline.indexer as indexer
original = indexer._decode_one
def slow(*args):
    time.sleep(0.03)
    return original(*args)
indexer._decode_one = slow
from lookalike.cli import main
sys.exit(main(["index", sys.argv[1], "--db", sys.argv[2], "--batch-size", "4"]))
"""


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_killed_run_resumes_without_redoing_work(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    total = 60
    for i in range(total):
        make_image(folder / f"{i:03}.jpg", seed=i)
    db = tmp_path / "c.db"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_INDEX, str(folder), str(db)])
    deadline = time.monotonic() + 60
    while _count(db) < 12 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _count(db)
    assert 12 <= done < total, "the run should have been killed part-way"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Collection.open(db) as collection:
        report = collection.add([folder])
        assert report.unchanged == done
        assert report.added == total - done
        assert len(collection) == total
