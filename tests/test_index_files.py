"""The approximate index beside a SQLite collection under trouble (issue 16): rebuilds racing
deletions, index files of another collection, orphans left by crashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
