"""The store's contract (:class:`lookalike.store.base.MetadataStore`), method by method, on
both stores: the SQLite file and a real PostgreSQL server. A method the parts above the store
call must be in the protocol, and every method of the protocol is run here on each store
(a new method without a check here fails :func:`test_every_protocol_method_is_checked`)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike import config
from lookalike.collection import Collection
from lookalike.store.base import DatabaseIndex, MetadataStore
from lookalike.store.records import EmbeddedImage, SkippedFile
from lookalike.store.registry import open_store

Check = Callable[[MetadataStore, Path], None]
ROWS = 9
DIMS = 8


def protocol_methods() -> set[str]:
    return {
        name
        for name, value in vars(MetadataStore).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }


@pytest.fixture
def store(db: str) -> Iterator[MetadataStore]:
    opened = open_store(db)
    yield opened
    opened.close()


def vectors() -> np.ndarray:
    rows = np.random.default_rng(5).normal(size=(ROWS, DIMS)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def fill(store: MetadataStore, folder: Path) -> list[str]:
    """ROWS real files (lookup checks them on disk) written as images, and one skipped."""
    paths = []
    for i in range(ROWS):
        file = folder / f"{i}.jpg"
        file.write_bytes(bytes(10 + i))
        paths.append(str(file))
    stats = [os.stat(p) for p in paths]
    store.write_batch(
        [
            EmbeddedImage(p, s.st_size, s.st_mtime_ns, 30, 20, v)
            for p, s, v in zip(paths, stats, vectors(), strict=True)
        ],
        [SkippedFile(str(folder / "bad.jpg"), 1, 2, "not an image")],
    )
    return paths


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """What both engines read back: float16 (a new SQLite file's vectors, PostgreSQL's
    halfvec), as float32: the same numbers to the bit."""
    return vectors.astype(np.float16).astype(np.float32)


def check_meta(store: MetadataStore, folder: Path) -> None:
    assert store.get_meta("colour") is None
    store.set_meta("colour", "blue")
    store.set_meta("colour", "green")
    assert store.get_meta("colour") == "green"


def check_artifacts(store: MetadataStore, folder: Path) -> None:
    assert store.get_artifact("model") is None
    store.put_artifact("model", b"\x00\x01fitted")
    assert store.get_artifact("model") == b"\x00\x01fitted"
    store.put_artifact("model", None)
    assert store.get_artifact("model") is None


def check_files(store: MetadataStore, folder: Path) -> None:
    before = store.generation()
    paths = fill(store, folder)
    assert store.generation() != before
    states = store.file_states(str(folder))
    assert set(states) == {*paths, str(folder / "bad.jpg")}
    assert states[str(folder / "bad.jpg")].skipped and not states[paths[0]].skipped
    assert store.file_states(str(folder / "elsewhere")) == {}
    assert [s.path for s in store.skipped_files()] == [str(folder / "bad.jpg")]
    assert store.count() == ROWS
    generation = store.generation()
    assert store.remove([paths[0], str(folder / "bad.jpg"), "/not/indexed.jpg"]) == 1
    assert store.generation() != generation
    assert store.count() == ROWS - 1 and store.skipped_files() == []


def check_vectors(store: MetadataStore, folder: Path) -> None:
    paths = fill(store, folder)
    ids, stored = store.load_vectors()
    assert stored.dtype == np.float32 and np.array_equal(stored, as_stored(vectors()))
    assert list(ids) == sorted(ids)
    assert np.array_equal(store.ids(), ids)
    batches = list(store.vector_batches(4))
    assert [len(b[0]) for b in batches] == [4, 4, 1]
    assert np.array_equal(np.concatenate([b[0] for b in batches]), ids)
    assert np.array_equal(np.concatenate([b[1] for b in batches]), stored)
    assert np.array_equal(store.vectors_of(ids[::-1]), stored[::-1])
    assert store.vectors_of(np.empty(0, dtype=np.int64)).shape == (0, 0)
    with pytest.raises(KeyError):
        store.vectors_of(np.array([int(ids.max()) + 1]))
    present, found_vectors = store.vectors_present(np.array([ids[3], int(ids.max()) + 1, ids[0]]))
    assert list(present) == [ids[3], ids[0]]
    assert np.array_equal(found_vectors, stored[[3, 0]])
    sample = store.sample_vectors(4, seed=1)
    assert sample.shape == (4, DIMS)
    assert all(any(np.array_equal(row, s) for s in stored) for row in sample)
    assert np.array_equal(store.sample_vectors(ROWS + 5), stored)
    found = store.lookup(paths[2])
    assert found is not None and found[0] == ids[2] and np.array_equal(found[1], stored[2])
    Path(paths[3]).write_bytes(b"changed on disk")
    assert store.lookup(paths[3]) is None and store.lookup("/not/indexed.jpg") is None
    assert store.paths(ids[:2]) == {int(ids[0]): paths[0], int(ids[1]): paths[1]}
    records = store.records([int(ids[1]), -5])
    assert list(records) == [int(ids[1])] and records[int(ids[1])].path == paths[1]
    assert (records[int(ids[1])].width, records[int(ids[1])].height) == (30, 20)


def check_changes(store: MetadataStore, folder: Path) -> None:
    everything = store.vectors_since(None)
    assert len(everything.ids) == 0 and everything.vectors is None
    fill(store, folder)
    cursor = store.cursor()
    unchanged = store.vectors_since(cursor)
    assert len(unchanged.ids) == 0 and unchanged.latest == cursor
    extra = folder / "extra.jpg"
    extra.write_bytes(b"x")
    store.write_batch([EmbeddedImage(str(extra), 1, 1, 1, 1, vectors()[0])], [])
    changed = store.vectors_since(cursor)
    assert len(changed.ids) == 1 and changed.latest != cursor
    assert store.records(changed.ids)[int(changed.ids[0])].path == str(extra)


def check_labels_and_clusters(store: MetadataStore, folder: Path) -> None:
    paths = fill(store, folder)
    generation = store.labels_generation()
    labels = {paths[0]: "cat", paths[1]: "dog", paths[2]: "cat", "/not/indexed.jpg": "cat"}
    assert store.set_labels(labels) == 4
    assert store.set_labels(labels) == 0  # unchanged: not counted
    assert store.labels_generation() != generation
    ids, categories = store.labelled_ids()
    assert categories == ["cat", "dog", "cat"] and list(ids) == sorted(ids)
    assert store.category_counts() == {"cat": 2, "dog": 1}
    store.set_clusters({int(ids[0]): 3, int(ids[1]): -1})
    assert store.cluster_counts() == {-1: 1, 3: 1}
    store.set_clusters({int(ids[2]): 0})
    assert store.cluster_counts() == {0: 1}
    assert store.records([int(ids[2])])[int(ids[2])].category == "cat"


def check_searching(store: MetadataStore, folder: Path) -> None:
    fill(store, folder)
    ids, stored = store.load_vectors()
    in_database = store.database_index()
    index_file = store.index_file()
    # Exactly one of the two ways to search a large collection.
    assert (in_database is None) != (index_file is None)
    if index_file is not None:
        assert index_file.parent.exists()
    else:
        assert isinstance(in_database, DatabaseIndex)
        store.reduce()  # no codec: the stored vectors are what the database searches
        _, found = in_database.search(in_database.codec.transform(stored[4:5]), 1)
        assert found[0, 0] == ids[4]
    store.reduce()


def check_bulk_load(store: MetadataStore, folder: Path) -> None:
    """A bulk load's writes land as any (a batch large enough for PostgreSQL's COPY: boxes,
    a name that is not UTF-8, a row written twice) and the store searches them after; one
    that fails keeps what it committed."""
    rows = 150  # over config.PG_COPY_ROWS
    rng = np.random.default_rng(8)
    unit = rng.normal(size=(rows, DIMS)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    paths = [str(folder / f"bulk{i}.jpg") for i in range(rows - 1)]
    paths.append(os.fsdecode(os.fsencode(folder) + b"/bulk\xff.jpg"))
    images = [
        EmbeddedImage(p, i, 2, 30, 20, v, box=(0.1, 0.2, 0.5, 0.75) if i % 2 else None)
        for i, (p, v) in enumerate(zip(paths, unit, strict=True))
    ]
    with pytest.raises(RuntimeError, match="stopped"), store.bulk_load(1_000_000):
        store.write_batch(images[:100], [])
        store.write_batch([*images[100:], images[3]], [])  # written again: replaced
        raise RuntimeError("stopped")
    assert store.count() == rows
    assert set(store.file_states(str(folder))) == set(paths)
    ids, stored = store.load_vectors()
    by_path = {r.path: r for r in store.records(ids).values()}
    assert by_path[paths[1]].box == (0.1, 0.2, 0.5, 0.75) and by_path[paths[2]].box is None
    expected = {p: v for p, v in zip(paths, unit, strict=True)}
    want = np.stack([expected[store.paths([i])[i]] for i in ids.tolist()])
    assert np.array_equal(stored, as_stored(want))
    in_database = store.database_index()
    if in_database is not None:
        wanted = by_path[paths[-1]].id
        _, found = in_database.search(in_database.codec.transform(unit[-1:]), 1)
        assert found[0, 0] == wanted


def check_close(store: MetadataStore, folder: Path) -> None:
    store.set_meta("closing", "yes")  # closed by the fixture; reopened below by the test


CHECKS: dict[str, Check] = {
    "get_meta": check_meta,
    "set_meta": check_meta,
    "get_artifact": check_artifacts,
    "put_artifact": check_artifacts,
    "generation": check_files,
    "file_states": check_files,
    "write_batch": check_files,
    "remove": check_files,
    "bulk_load": check_bulk_load,
    "skipped_files": check_files,
    "count": check_files,
    "load_vectors": check_vectors,
    "ids": check_vectors,
    "vector_batches": check_vectors,
    "vectors_of": check_vectors,
    "sample_vectors": check_vectors,
    "vectors_present": check_vectors,
    "lookup": check_vectors,
    "paths": check_vectors,
    "records": check_vectors,
    "cursor": check_changes,
    "vectors_since": check_changes,
    "set_labels": check_labels_and_clusters,
    "labels_generation": check_labels_and_clusters,
    "labelled_ids": check_labels_and_clusters,
    "category_counts": check_labels_and_clusters,
    "set_clusters": check_labels_and_clusters,
    "cluster_counts": check_labels_and_clusters,
    "index_file": check_searching,
    "database_index": check_searching,
    "reduce": check_searching,
    "close": check_close,
}


def test_every_protocol_method_is_checked() -> None:
    assert set(CHECKS) == protocol_methods()


def test_each_store_has_every_protocol_method_with_its_parameters(store: MetadataStore) -> None:
    assert isinstance(store, MetadataStore)
    for name in protocol_methods():
        wanted = inspect.signature(getattr(MetadataStore, name))
        found = inspect.signature(getattr(type(store), name))
        for parameter in wanted.parameters.values():
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                continue  # any name will do
            assert parameter.name in found.parameters, f"{type(store).__name__}.{name}"
            if parameter.default is not inspect.Parameter.empty:
                assert found.parameters[parameter.name].default is not inspect.Parameter.empty


@pytest.mark.parametrize("check", sorted(set(CHECKS.values()), key=lambda c: c.__name__))
def test_each_store_keeps_the_contract(
    store: MetadataStore, tmp_path: Path, check: Check, db: str
) -> None:
    check(store, tmp_path)
    if check is check_close:
        store.close()
        again = open_store(db)
        assert again.get_meta("closing") == "yes"
        again.close()
        store.close = lambda: None  # type: ignore[method-assign]  # closed already


def test_a_large_collection_is_searched_in_either_store(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the approximate-index threshold, SQLite keeps an index file beside itself and
    PostgreSQL searches in its database; both find each image's own vector first (the
    PostgreSQL collection used to fail there, asking its URL for a file name)."""
    monkeypatch.setattr(config, "ANN_MIN_IMAGES", 50)
    monkeypatch.setattr(config, "CODEC_MIN_IMAGES", 10_000)  # raw vectors: a small test
    rows = np.random.default_rng(2).normal(size=(80, 32)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with Collection.open(db) as collection:
        collection.store.write_batch(
            [EmbeddedImage(f"/p/{i:03}.jpg", 1, 1, 8, 8, v) for i, v in enumerate(rows)], []
        )
        collection.sync_index()
        ids = collection.store.ids()
        results = collection.search_many(list(rows[:5]), k=1)
        assert [r[0].id for r in results] == list(ids[:5])
        index_file = collection.store.index_file()
        assert (index_file is not None and index_file.exists()) == db.endswith(".db")
