"""The approximate index beside a SQLite collection under trouble (issue 16): rebuilds racing
deletions, index files of another collection, orphans left by crashes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike.index import ann as ann_index
from lookalike.index.persistent import FollowedIndex, Target
from lookalike.store.records import EmbeddedImage
from lookalike.store.sqlite import Store

DIMS = 32


def _vectors(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, DIMS))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _fill(store: Store, vectors: np.ndarray) -> None:
    store.write_batch(
        [EmbeddedImage(f"/p/{i:05}.jpg", 1, 1, 8, 8, v) for i, v in enumerate(vectors)], []
    )


class _DeletedWhileRead(Store):
    """A store whose ids, once read, lose some of their images to another connection (a
    server deleting while this process rebuilds): the race of issue 16, made certain."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.doomed: list[str] = []

    def ids(self) -> np.ndarray:
        ids = super().ids()
        if self.doomed:
            other = Store(self.path)
            try:
                assert other.remove(self.doomed) == len(self.doomed)
            finally:
                other.close()
            self.doomed = []
        return ids


IVF = Target("ivf", None, "ivf:pca0", None)


def test_a_rebuild_tolerates_images_deleted_while_it_reads(tmp_path: Path) -> None:
    vectors = _vectors(1500)
    store = _DeletedWhileRead(tmp_path / "c.db")
    try:
        _fill(store, vectors)
        store.doomed = [f"/p/{i:05}.jpg" for i in range(0, 1500, 7)]
        followed = FollowedIndex(store, IVF)
        index = followed.current()  # no index file yet: built from the store
        assert len(index) == store.count() == 1500 - len(range(0, 1500, 7))
        _, ids = index.search(vectors[1:2], 1)
        assert ids[0][0] == 2  # row 1 (id 2) finds itself
    finally:
        store.close()


def test_sampling_vectors_leaves_out_images_deleted_meanwhile(tmp_path: Path) -> None:
    store = _DeletedWhileRead(tmp_path / "c.db")
    try:
        _fill(store, _vectors(300))
        store.doomed = ["/p/00003.jpg", "/p/00200.jpg"]
        assert store.sample_vectors(1000).shape == (298, DIMS)
        with pytest.raises(KeyError):  # the strict read still says what is missing
            store.vectors_of(np.array([4, 201]))
    finally:
        store.close()


def _saved_index(folder: Path, name: str, seed: int) -> tuple[Store, FollowedIndex]:
    store = Store(folder / name)
    _fill(store, _vectors(1200, seed))
    followed = FollowedIndex(store, IVF)
    followed.current()  # built and saved
    return store, followed


def _index_files(folder: Path, name: str) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(f"{name}.ann.")}


def test_a_header_copied_from_another_collection_never_removes_its_files(
    tmp_path: Path,
) -> None:
    a, _ = _saved_index(tmp_path, "a.db", 1)
    a.close()
    a_files = _index_files(tmp_path, "a.db")
    assert len(a_files) == 2  # its FAISS data and ids
    b = Store(tmp_path / "b.db")
    _fill(b, _vectors(1200, 2))
    shutil.copy(tmp_path / "a.db.ann", tmp_path / "b.db.ann")  # a careless copy
    followed = FollowedIndex(b, IVF)
    followed.current()  # not b's index: rebuilt and saved over the copied header
    followed.save()
    b.close()
    assert _index_files(tmp_path, "a.db") == a_files  # a's files untouched
    assert ann_index.load(tmp_path / "a.db.ann") is not None
    header = json.loads((tmp_path / "b.db.ann").read_text())
    assert header["index_file"].startswith("b.db.ann.")


_SAVE_THEN_DIE = """
import sys, threading
from lookalike.index import ann
from lookalike.index.persistent import FollowedIndex, Target
from lookalike.store.sqlite import Store
from lookalike.store.records import EmbeddedImage
import numpy as np

def stopping(name, before):
    original = getattr(ann, name)
    def stop(*args):
        if not before:
            original(*args)
        print("stopped", flush=True)
        threading.Event().wait()  # killed here
    return stop

store = Store(sys.argv[1])
vectors = np.random.default_rng(5).normal(size=(50, 32)).astype(np.float32)
store.write_batch([EmbeddedImage(f"/q/{i}.jpg", 1, 1, 8, 8, v) for i, v in enumerate(vectors)], [])
followed = FollowedIndex(store, Target("ivf", None, "ivf:pca0", None))
followed.current()
name, when = sys.argv[2].split(":")
setattr(ann, name, stopping(name, when == "before"))
followed.save()
"""

#: Where a save is killed: the FAISS data written; every data file written; the header's
#: temporary file written; the new header in place, the old data files not yet removed.
SAVE_POINTS = ["_fsync:after", "_fsync_dir:before", "_write_header:before", "_write_header:after"]


@pytest.mark.parametrize("point", SAVE_POINTS)
def test_a_save_killed_at_any_point_leaves_an_index_that_opens_and_no_orphan(
    tmp_path: Path, point: str
) -> None:
    store, _ = _saved_index(tmp_path, "c.db", 1)
    store.close()
    saved = _index_files(tmp_path, "c.db")
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVE_THEN_DIE, str(tmp_path / "c.db"), point],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "stopped"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert _index_files(tmp_path, "c.db") != saved  # it left files behind
    store = Store(tmp_path / "c.db")
    try:
        followed = FollowedIndex(store, IVF)
        index = followed.current()  # opened (the old index or the new one), caught up
        assert len(index) == 1250  # every committed row
        _, ids = index.search(_vectors(1200, 1)[5:6], 10)  # it searches: ids of the store
        assert len(set(ids[0])) == 10 and set(ids[0]) <= set(store.ids())
        header = json.loads((tmp_path / "c.db.ann").read_text())
        named = {header["index_file"], header["ids_file"]}
        assert _index_files(tmp_path, "c.db") == named  # nothing else: no orphan
    finally:
        store.close()


def test_data_files_of_a_deleted_header_are_removed_at_the_next_open(tmp_path: Path) -> None:
    store, _ = _saved_index(tmp_path, "c.db", 1)
    store.close()
    old = _index_files(tmp_path, "c.db")
    (tmp_path / "c.db.ann").unlink()
    store = Store(tmp_path / "c.db")
    try:
        FollowedIndex(store, IVF).current()  # rebuilt (and saved anew)
        now = _index_files(tmp_path, "c.db")
        assert not now & old and len(now) == 2
    finally:
        store.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_leaves_no_partial_index_file_and_says_so(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(small_disk / "c.db")
    try:
        _fill(store, _vectors(1200, 1))
        followed = FollowedIndex(store, IVF)
        followed.current()
        saved = _index_files(small_disk, "c.db")
        _fill(store, _vectors(1300, 2)[1200:])
        followed.current()  # caught up: unsaved changes
        ballast = small_disk / "ballast"
        with open(ballast, "wb") as f:  # fill the disk
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        with caplog.at_level(logging.ERROR):
            followed.save()  # as at shutdown
        assert "could not be saved" in caplog.text
        assert _index_files(small_disk, "c.db") == saved  # no 0-byte .faiss left
    finally:
        store.close()
