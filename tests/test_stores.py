"""The metadata and vector store, on both engines: the embedded SQLite file and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike.store.records import EmbeddedImage, SkippedFile
from lookalike.store.registry import open_store
from lookalike.store.sqlite import Store

#: The vectors_since cursor that reads everything.
EVERYTHING = None


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    opened = open_store(db)
    yield opened  # type: ignore[misc]
    opened.close()


def _unit(rng: np.random.Generator, n: int, dims: int = 16) -> np.ndarray:
    v = rng.normal(size=(n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _as_stored(vectors: np.ndarray) -> np.ndarray:
    return vectors.astype(np.float16).astype(np.float32)


def _images(names: list[str], vectors: np.ndarray, folder: str = "/x") -> list[EmbeddedImage]:
    return [
        EmbeddedImage(f"{folder}/{name}", 100 + i, 1000 + i, 30 + i, 20, vectors[i])
        for i, name in enumerate(names)
    ]


def test_written_images_and_skipped_files_read_back(store: Store) -> None:
    vectors = _unit(np.random.default_rng(0), 3)
    store.write_batch(
        [
            *_images(["a.jpg", "b.jpg", "c.jpg"], vectors),
            EmbeddedImage("/y/d.jpg", 1, 2, 3, 4, vectors[0], box=(0.1, 0.2, 0.5, 0.75)),
        ],
        [SkippedFile("/x/bad.jpg", 5, 6, "not an image")],
    )
    assert store.count() == 4
    states = store.file_states("/x")
    assert set(states) == {"/x/a.jpg", "/x/b.jpg", "/x/c.jpg", "/x/bad.jpg"}
    assert states["/x/b.jpg"].size == 101 and states["/x/b.jpg"].mtime_ns == 1001
    assert states["/x/bad.jpg"].skipped and not states["/x/a.jpg"].skipped
    assert set(store.file_states()) == {*states, "/y/d.jpg"}
    assert [(s.path, s.reason) for s in store.skipped_files()] == [("/x/bad.jpg", "not an image")]

    ids, stored = store.load_vectors()
    assert list(ids) == sorted(ids) and stored.shape == (4, 16)
    # float16 in both engines (a new SQLite file, PostgreSQL's halfvec): the same rounding
    np.testing.assert_array_equal(stored[:3], _as_stored(vectors))
    records = store.records(ids)
    by_path = {r.path: r for r in records.values()}
    assert by_path["/y/d.jpg"].box == pytest.approx((0.1, 0.2, 0.5, 0.75))
    assert (by_path["/x/a.jpg"].width, by_path["/x/a.jpg"].height) == (30, 20)
    assert store.paths([int(ids[0]), 999_999]) == {int(ids[0]): records[int(ids[0])].path}


def test_a_file_moves_between_indexed_and_skipped(store: Store) -> None:
    vectors = _unit(np.random.default_rng(1), 1)
    store.write_batch([], [SkippedFile("/x/a.jpg", 1, 1, "truncated")])
    store.write_batch(_images(["a.jpg"], vectors), [])  # fixed on disk, indexed now
    assert store.skipped_files() == [] and store.count() == 1
    store.write_batch([], [SkippedFile("/x/a.jpg", 2, 2, "broken again")])
    assert store.count() == 0 and store.file_states()["/x/a.jpg"].skipped


def test_rewriting_a_file_keeps_its_id_and_replaces_its_vector(store: Store) -> None:
    rng = np.random.default_rng(2)
    first, second = _unit(rng, 2), _unit(rng, 2)
    store.write_batch(_images(["a.jpg", "b.jpg"], first), [])
    ids_before, _ = store.load_vectors()
    store.write_batch(_images(["a.jpg"], second[:1]), [])
    ids_after, stored = store.load_vectors()
    assert list(ids_after) == list(ids_before)
    np.testing.assert_array_equal(stored[0], _as_stored(second[0]))


def test_remove_forgets_images_and_skipped_files(store: Store) -> None:
    store.write_batch(
        _images(["a.jpg", "b.jpg"], _unit(np.random.default_rng(3), 2)),
        [SkippedFile("/x/c.jpg", 1, 1, "bad")],
    )
    assert store.remove(["/x/a.jpg", "/x/c.jpg", "/x/never.jpg"]) == 1
    assert set(store.file_states()) == {"/x/b.jpg"}


def test_lookup_checks_the_file_on_disk(store: Store, tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"0123456789")
    stat = photo.stat()
    vector = _unit(np.random.default_rng(4), 1)[0]
    store.write_batch([EmbeddedImage(str(photo), stat.st_size, stat.st_mtime_ns, 1, 1, vector)], [])
    found = store.lookup(str(photo))
    assert found is not None
    np.testing.assert_array_equal(found[1], _as_stored(vector))
    photo.write_bytes(b"changed, longer content")
    assert store.lookup(str(photo)) is None
    assert store.lookup(str(tmp_path / "missing.jpg")) is None


def test_vectors_since_follows_additions_updates_and_removals(store: Store) -> None:
    rng = np.random.default_rng(5)
    store.write_batch(_images(["a.jpg", "b.jpg", "c.jpg"], _unit(rng, 3)), [])
    everything = store.vectors_since(EVERYTHING)
    assert len(everything.ids) == 3 and everything.vectors is not None
    assert list(everything.all_ids) == list(everything.ids)
    generation = store.generation()

    nothing_new = store.vectors_since(everything.latest)
    assert len(nothing_new.ids) == 0 and nothing_new.vectors is None
    assert nothing_new.latest == everything.latest

    changed = _unit(rng, 2)
    store.write_batch(_images(["b.jpg", "d.jpg"], changed), [])  # one update, one new
    store.remove(["/x/a.jpg"])
    assert store.generation() != generation
    since = store.vectors_since(everything.latest)
    by_path = {r.path: i for i, r in store.records(since.all_ids).items()}
    assert set(by_path) == {"/x/b.jpg", "/x/c.jpg", "/x/d.jpg"}
    assert sorted(since.ids) == sorted([by_path["/x/b.jpg"], by_path["/x/d.jpg"]])
    assert since.vectors is not None and since.vectors.shape == (2, 16)
    assert since.latest > everything.latest
    assert len(store.vectors_since(since.latest).ids) == 0


def test_meta_and_artifacts(store: Store) -> None:
    assert store.get_meta("nothing") is None
    store.set_meta("pca", "{}")
    store.set_meta("pca", '{"dims": 8}')
    assert store.get_meta("pca") == '{"dims": 8}'
    assert store.get_artifact("pca") is None
    store.put_artifact("pca", b"\x00\x01binary")
    store.put_artifact("pca", b"\x00\x02binary")
    assert store.get_artifact("pca") == b"\x00\x02binary"
    store.put_artifact("pca", None)
    assert store.get_artifact("pca") is None


def test_labels_count_only_indexed_images(store: Store) -> None:
    store.write_batch(_images(["a.jpg", "b.jpg", "c.jpg"], _unit(np.random.default_rng(6), 3)), [])
    generation = store.labels_generation()
    labels = {"/x/a.jpg": "cat", "/x/b.jpg": "dog", "/x/later.jpg": "cat"}
    assert store.set_labels(labels) == 3
    assert store.labels_generation() > generation
    generation = store.labels_generation()
    assert store.set_labels(labels) == 0  # nothing changed
    assert store.labels_generation() == generation
    assert store.set_labels({"/x/b.jpg": "cat"}) == 1
    assert store.category_counts() == {"cat": 2}
    ids, names = store.labelled_ids()
    assert names == ["cat", "cat"] and list(ids) == sorted(ids)
    assert {r.category for r in store.records(ids).values()} == {"cat"}


def test_clusters_replace_the_previous_ones(store: Store) -> None:
    store.write_batch(_images(["a.jpg", "b.jpg", "c.jpg"], _unit(np.random.default_rng(7), 3)), [])
    ids, _ = store.load_vectors()
    store.set_clusters({int(ids[0]): 0, int(ids[1]): 0, int(ids[2]): -1})
    assert store.cluster_counts() == {-1: 1, 0: 2}
    store.set_clusters({int(ids[2]): 4})
    assert store.cluster_counts() == {4: 1}
    assert store.records([int(ids[2])])[int(ids[2])].cluster == 4


def test_folder_prefixes_are_not_confused(store: Store) -> None:
    """`/x/a` must not match `/x/a b` or `/x/a-1` (a range on sorted paths, byte order)."""
    vectors = _unit(np.random.default_rng(8), 4)
    store.write_batch(
        [
            EmbeddedImage(p, 1, 1, 1, 1, vectors[i])
            for i, p in enumerate(["/x/a/1.jpg", "/x/a b/2.jpg", "/x/a-1/3.jpg", "/x/a_/4.jpg"])
        ],
        [],
    )
    assert set(store.file_states("/x/a")) == {"/x/a/1.jpg"}
    assert set(store.file_states("/x/a_/")) == {"/x/a_/4.jpg"}


def test_names_that_are_not_utf8_round_trip(store: Store) -> None:
    good, bad = os.fsdecode(b"/x/caf\xe9.jpg"), os.fsdecode(b"/x/bad\xff.jpg")
    vector = _unit(np.random.default_rng(9), 1)[0]
    store.write_batch([EmbeddedImage(good, 1, 1, 1, 1, vector)], [SkippedFile(bad, 1, 1, "no")])
    assert set(store.file_states("/x")) == {good, bad}
    assert [s.path for s in store.skipped_files()] == [bad]
    ids, _ = store.load_vectors()
    assert store.paths(ids) == {int(ids[0]): good}
    assert store.set_labels({good: "cafe"}) == 1 and store.category_counts() == {"cafe": 1}
    assert store.remove([good, bad]) == 1 and store.file_states() == {}


def test_forgotten_files_lose_their_records(store: Store) -> None:
    """A file that failed for now (not its fault) is forgotten, so the next run tries again."""
    store.write_batch(
        _images(["a.jpg", "b.jpg"], _unit(np.random.default_rng(10), 2)),
        [SkippedFile("/x/c.jpg", 1, 1, "bad")],
    )
    store.write_batch([], [], forget=["/x/a.jpg", "/x/c.jpg"])
    assert set(store.file_states()) == {"/x/b.jpg"} and store.count() == 1
