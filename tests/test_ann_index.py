"""The FAISS index: recall against exact search, removals, filters, persistence, torn files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from lookalike.errors import Unavailable
from lookalike.index import ann as ann_index
from lookalike.index import registry as indexes
from lookalike.index.ann import AnnIndex
from lookalike.index.base import VectorIndex
from lookalike.index.exact import ExactIndex


def clustered(n: int, dims: int = 32, centres: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters, like image descriptors (uniform noise is unrealistically hard)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dims))
    vectors = means[rng.integers(0, centres, n)] + 0.6 * rng.normal(size=(n, dims))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def built(kind: str, ids: np.ndarray, vectors: np.ndarray) -> AnnIndex:
    index = indexes.build_index(kind, ids, vectors)
    assert isinstance(index, AnnIndex) and isinstance(index, VectorIndex)
    assert not index.capabilities.exact and index.capabilities.persist
    return index


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


@pytest.mark.parametrize("kind", ann_index.KINDS)
def test_recall_against_exact_search(kind: str) -> None:
    vectors = clustered(4000)
    ids = np.arange(10, 4010, dtype=np.int64)
    index = built(kind, ids, vectors)
    queries = clustered(50, seed=1)
    scores, found = index.search(queries, 10)
    true_scores, truth = ExactIndex(ids, vectors).search(queries, 10)
    assert recall(found, truth) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert np.abs(scores[:, 0] - true_scores[:, 0]).max() < 0.05  # 8-bit codes: close cosines
    assert len(index) == 4000 and set(index.ids) == set(ids.tolist())


@pytest.mark.parametrize("kind", ann_index.KINDS)
def test_exclude_padding_and_empty(kind: str) -> None:
    vectors = clustered(300)
    ids = np.arange(300, dtype=np.int64)
    index = built(kind, ids, vectors)
    _, found = index.search(vectors[:2], 5, exclude=[0, None])
    assert 0 not in found[0] and found[1][0] == 1
    scores, found = index.search(vectors[:1], 400)
    assert (found[0] >= 0).sum() >= 250  # approximate, but most of a small index
    assert np.all(found[0][found[0] < 0] == -1) and np.all(np.isneginf(scores[0][found[0] < 0]))
    empty = AnnIndex.train(kind, vectors, 300)
    scores, found = empty.search(vectors[:1], 3)
    assert found.tolist() == [[-1, -1, -1]] and np.isneginf(scores).all()


@pytest.mark.parametrize("kind", ann_index.KINDS)
def test_remove_and_replace(kind: str) -> None:
    vectors = clustered(1000)
    ids = np.arange(1000, dtype=np.int64)
    index = built(kind, ids, vectors)
    assert index.remove(np.array([5, 6, 99999])) is index and len(index) == 998
    _, found = index.search(vectors[5:7], 10)
    assert 5 not in found and 6 not in found
    # An updated image: same id, new vector; its old vector no longer answers for it.
    index.add(np.array([7]), vectors[500:501])
    _, found = index.search(vectors[500:501], 2)
    assert set(found[0]) == {7, 500}
    _, found = index.search(vectors[7:8], 10)
    assert 7 not in found
    assert len(index) == 998
    index.remove(np.arange(0, 1000, 2))
    assert len(index) == 499  # 500 even ids, 6 already gone
    assert index.needs_rebuild == (kind == "hnsw")


@pytest.mark.parametrize("kind", ann_index.KINDS)
def test_filter_returns_only_allowed_ids(kind: str) -> None:
    vectors = clustered(3000)
    ids = np.arange(3000, dtype=np.int64)
    index = built(kind, ids, vectors)
    allowed = np.arange(0, 3000, 37)  # about 3%: a selective filter scans more
    queries = clustered(20, seed=2)
    _, found = index.search(queries, 10, filter=allowed)
    assert set(found[found >= 0].tolist()) <= set(allowed.tolist())
    _, truth = ExactIndex(allowed, vectors[allowed]).search(queries, 10)
    assert recall(found, truth) >= 0.9


@pytest.mark.parametrize("kind", ann_index.KINDS)
def test_save_load_and_torn_files(kind: str, tmp_path) -> None:
    vectors = clustered(800)
    ids = np.arange(800, dtype=np.int64) * 3
    index = built(kind, ids, vectors)
    index.remove(np.array([3]))
    path = tmp_path / "c.db.ann"
    index.save(path, {"generation": 7})
    loaded = ann_index.load(path)
    assert loaded is not None
    again, header = loaded
    assert header["generation"] == 7 and header["kind"] == kind and len(again) == 799
    queries = clustered(5, seed=3)
    assert np.array_equal(again.search(queries, 5)[1], index.search(queries, 5)[1])
    # Saving again replaces the data files; the old ones are removed.
    index.save(path, {"generation": 8})
    assert len(list(tmp_path.iterdir())) == 3
    # A torn data file (a crash mid-write, a disk error) is detected, never trusted.
    data = tmp_path / json.loads(path.read_text())["index_file"]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert ann_index.load(path) is None
    data.unlink()
    assert ann_index.load(path) is None
    path.write_text("{not json")
    assert ann_index.load(path) is None
    ann_index.remove_files(path)
    assert not path.exists()


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown index kind"):
        ann_index.factory_string("lsh", 10)


def test_vectors_of() -> None:
    vectors = clustered(300)
    hnsw = built("hnsw", np.arange(300), vectors)
    assert np.abs(hnsw.vectors_of(np.array([4, 9])) - vectors[[4, 9]]).max() < 0.05
    ivf = built("ivf", np.arange(300), vectors)
    assert not ivf.capabilities.reconstruct
    with pytest.raises(Unavailable):
        ivf.vectors_of(np.array([4]))


@pytest.mark.parametrize("kind", ann_index.KINDS)
def test_load_maps_the_file_and_reads_it_in_before_changes(kind: str, tmp_path) -> None:
    vectors = clustered(3000, dims=64)
    ids = np.arange(3000, dtype=np.int64)
    index = built(kind, ids, vectors)
    path = tmp_path / "c.db.ann"
    index.save(path, {"generation": 1})
    loaded = ann_index.load(path)
    assert loaded is not None
    mapped, _ = loaded
    assert mapped.mapped  # opened in O(1): memory-mapped, not read whole
    queries = clustered(5, dims=64, seed=3)
    assert np.array_equal(mapped.search(queries, 5)[1], index.search(queries, 5)[1])
    # Another process saves a newer index (the mapped file is unlinked); this one still
    # reads its own file in before its first change, and FAISS can change it.
    index.save(path, {"generation": 2})
    assert not (tmp_path / loaded[1]["index_file"]).exists()
    mapped.add(np.array([5000]), -vectors[:1])
    assert not mapped.mapped and len(mapped) == 3001
    assert mapped.search(-vectors[:1], 1)[1][0, 0] == 5000
    mapped.remove(np.array([0, 1]))
    assert len(mapped) == 2999
    in_memory = ann_index.load(path, mmap=False)
    assert in_memory is not None and not in_memory[0].mapped


def test_torn_index_files_are_never_trusted(tmp_path) -> None:
    vectors = clustered(6000, dims=128)
    index = built("hnsw", np.arange(6000, dtype=np.int64), vectors)
    path = tmp_path / "c.db.ann"
    index.save(path, {"generation": 1})
    header = json.loads(path.read_text())
    assert header["format"] == 2 and header["index_bytes"] > 2 * ann_index.FINGERPRINT_BYTES
    data = tmp_path / header["index_file"]
    good = data.read_bytes()
    for torn in (
        good[: len(good) - 4096],  # truncated
        good + b"\0" * 4096,  # extended
        good[:-16] + bytes(16),  # same size, another ending
        bytes(64) + good[64:],  # same size, another beginning
    ):
        data.write_bytes(torn)
        assert ann_index.load(path) is None
    data.write_bytes(good)
    assert ann_index.load(path) is not None
    ids = tmp_path / header["ids_file"]
    ids.write_bytes(ids.read_bytes()[:-8])
    assert ann_index.load(path) is None


def test_format_1_header_is_verified_once_and_upgraded(tmp_path) -> None:
    vectors = clustered(800)
    index = built("hnsw", np.arange(800, dtype=np.int64), vectors)
    path = tmp_path / "c.db.ann"
    index.save(path, {"generation": 3})
    header = json.loads(path.read_text())
    data = tmp_path / header["index_file"]
    new_keys = ("index_bytes", "index_fingerprint", "ids_bytes")
    old = {k: v for k, v in header.items() if k not in new_keys}  # format 1: whole-file sums
    old.update(format=1, index_sha256=hashlib.sha256(data.read_bytes()).hexdigest())
    path.write_text(json.dumps(old))
    loaded = ann_index.load(path)
    assert loaded is not None and loaded[1]["generation"] == 3
    assert json.loads(path.read_text())["format"] == 2  # upgraded in place, files kept
    assert ann_index.load(path) is not None
    old["index_sha256"] = "0" * 64  # a format-1 index failing its checksum is rebuilt
    path.write_text(json.dumps(old))
    assert ann_index.load(path) is None
