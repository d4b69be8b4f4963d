"""Near-duplicates: planted pairs are found, blocks change nothing, memory stays small."""

from __future__ import annotations

import io
import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Collection, config
from lookalike.analysis.duplicates import (
    DuplicateGroup,
    duplicate_pairs,
    find_duplicates,
    group_pairs,
    with_records,
)
from lookalike.cli import main
from lookalike.encode.models import normalize
from lookalike.store.records import ImageRecord
from tests.conftest import SAMPLE


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return normalize(np.random.default_rng(seed).normal(size=(n, dim))).astype(np.float32)


def near(vectors: np.ndarray, noise: float | np.ndarray, seed: int) -> np.ndarray:
    """Noisy unit copies of ``vectors`` (one vector or rows; ``noise`` scalar or per row)."""
    rng = np.random.default_rng(seed)
    rows = np.atleast_2d(vectors)
    noisy = rows + np.reshape(noise, (-1, 1)) * rng.normal(size=rows.shape)
    out = normalize(noisy).astype(np.float32)
    return out if vectors.ndim == 2 else out[0]


def brute_force_groups(vectors: np.ndarray, threshold: float) -> set[frozenset[int]]:
    """Connected components of the full N x N cosine matrix, by a plain union-find."""
    parent = list(range(len(vectors)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    scores = vectors @ vectors.T
    for i, j in zip(*np.nonzero(np.triu(scores >= threshold, k=1)), strict=True):
        parent[root(int(i))] = root(int(j))
    components: dict[int, set[int]] = {}
    for i in range(len(vectors)):
        components.setdefault(root(i), set()).add(i)
    return {frozenset(c) for c in components.values() if len(c) > 1}


def test_planted_duplicates_among_random_vectors() -> None:
    vectors = random_unit(3000, 64)
    vectors[500] = near(vectors[10], 0.03, 1)  # a pair
    vectors[30] = near(vectors[20], 0.03, 2)  # a chain of three
    vectors[40] = near(vectors[30], 0.03, 3)
    ids = np.arange(3000) * 7 + 1  # ids are not positions
    groups = find_duplicates(ids, vectors, threshold=0.9)
    assert sorted(g.ids for g in groups) == [(71, 3501), (141, 211, 281)]
    assert groups[0].min_score >= groups[1].min_score  # tightest first
    (pair,) = (g for g in groups if len(g) == 2)
    assert pair.min_score == pair.max_score == pytest.approx(float(vectors[10] @ vectors[500]))
    assert all(s >= 0.9 for g in groups for s in g.scores)


@pytest.mark.parametrize("block_elements", [7, 1000, 10**8])
def test_blocks_give_the_same_groups_as_brute_force(block_elements: int) -> None:
    # clumps of nearly equal vectors at several spreads, so that many pairs sit near 0.9
    rng = np.random.default_rng(5)
    base = random_unit(40, 24, seed=4)
    spread = rng.uniform(0.03, 0.15, size=300)
    vectors = np.vstack([near(base[rng.integers(40, size=300)], spread, 6), base])
    expected = brute_force_groups(vectors, 0.9)
    assert len(expected) > 10
    first, second, score = duplicate_pairs(
        vectors, threshold=0.9, max_neighbours=len(vectors), block_elements=block_elements
    )
    assert (first < second).all() and (score >= 0.9).all()
    full = vectors @ vectors.T
    assert len(first) == int(np.triu(full >= 0.9, k=1).sum())
    groups = group_pairs(len(vectors), first, second, score)
    assert {frozenset(g.ids) for g in groups} == expected
    # the default per-image cap keeps the same groups here
    capped = find_duplicates(np.arange(len(vectors)), vectors, threshold=0.9)
    assert {frozenset(g.ids) for g in capped} == expected


def test_many_copies_of_one_picture_keep_few_pairs() -> None:
    vectors = np.vstack([np.repeat(random_unit(1, 32), 200, axis=0), random_unit(50, 32, 1)])
    first, _, _ = duplicate_pairs(vectors, threshold=0.95, max_neighbours=5)
    assert len(first) <= 200 * 5  # not 200 * 199 / 2
    (group,) = find_duplicates(np.arange(250), vectors, threshold=0.95, max_neighbours=5)
    assert group.ids == tuple(range(200))


def test_no_n_by_n_matrix() -> None:
    """Peak memory of the search is one block, not the 4000 x 4000 score matrix (64 MB)."""
    vectors = random_unit(4000, 16)
    tracemalloc.start()
    try:
        duplicate_pairs(vectors, threshold=0.99, block_elements=400_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_with_records_puts_the_largest_image_first() -> None:
    group = DuplicateGroup(ids=(1, 2, 3), scores=(0.95, 0.97, 0.96), min_score=0.95, max_score=0.97)
    records = {
        1: ImageRecord(1, "/a.jpg", 100, 100, None, None, None),
        2: ImageRecord(2, "/b.jpg", 400, 300, None, None, None),
        3: ImageRecord(3, "/c.jpg", 100, 100, None, None, None),
    }
    (ordered,) = with_records([group], records)
    assert ordered.paths == ("/b.jpg", "/c.jpg", "/a.jpg")
    assert ordered.scores == (0.97, 0.96, 0.95)
    assert with_records([group], {1: records[1]}) == []  # others gone: no group left
    assert json.loads(json.dumps(ordered.as_dict()))["images"][0] == {
        "id": 2,
        "score": 0.97,
        "path": "/b.jpg",
    }


# --- a real collection ---------------------------------------------------------------------


def reencoded_copy(source: Path, target: Path) -> Path:
    """What a copy of a photo goes through: resized to 80%, saved again at JPEG quality 50."""
    with Image.open(source) as image:
        small = image.convert("RGB").resize((image.width * 4 // 5, image.height * 4 // 5))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=50)
    target.write_bytes(buffer.getvalue())
    return target


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The 30 distinct sample photos plus a re-encoded copy of one, indexed once."""
    root = tmp_path_factory.mktemp("duplicates")
    photos = root / "photos"
    shutil.copytree(SAMPLE / "collection", photos)
    reencoded_copy(photos / "cup" / "image_0002.jpg", photos / "cup" / "copy_of_0002.jpg")
    db = root / "c.db"
    with Collection.open(db) as collection:
        collection.add([photos])
    return photos, db


def test_collection_finds_the_copy_and_nothing_else(
    indexed: tuple[Path, Path], tmp_path: Path
) -> None:
    photos, original = indexed
    db = tmp_path / "c.db"
    shutil.copy(original, db)
    with Collection.open(db) as collection:
        (group,) = collection.duplicates()
        # the original is larger, so it comes first
        assert group.paths == (
            str(photos / "cup" / "image_0002.jpg"),
            str(photos / "cup" / "copy_of_0002.jpg"),
        )
        assert group.min_score >= config.DUPLICATE_THRESHOLD
        collection.remove([photos / "cup" / "copy_of_0002.jpg"])
        assert collection.duplicates() == []  # 30 distinct photos: no near-duplicates


def test_cli_duplicates_text_and_json(
    indexed: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, original = indexed
    db = tmp_path / "c.db"
    shutil.copy(original, db)
    assert main(["duplicates", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threshold"] == config.DUPLICATE_THRESHOLD and out["images"] == 31
    (group,) = out["groups"]
    assert group["size"] == 2 and group["images"][1]["path"].endswith("copy_of_0002.jpg")

    assert main(["duplicates", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(
        "1 group of near-duplicates (2 images; 0 exact, 1 near, 0 similar) among 31 images"
    )
    assert "copy_of_0002.jpg" in text

    assert main(["duplicates", "--db", str(db), "--threshold", "0.2", "--json"]) == 0
    loose = json.loads(capsys.readouterr().out)
    assert sum(g["size"] for g in loose["groups"]) > 2  # a low threshold groups much more


def test_large_collections_find_duplicates_from_index_neighbours(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an approximate index, candidates come from each image's neighbours; the groups
    are those of the all-pairs search on the same vectors."""
    from lookalike.collection import Collection
    from lookalike.store.records import EmbeddedImage

    monkeypatch.setattr(config, "ANN_MIN_IMAGES", 1000)
    rng = np.random.default_rng(5)
    means = rng.normal(size=(10, 1280))
    vectors = means[rng.integers(0, 10, 1600)] + 1.5 * rng.normal(size=(1600, 1280))
    for original, copy in [(3, 1500), (3, 1501), (40, 1502), (900, 1503)]:
        vectors[copy] = vectors[original] + 0.12 * rng.normal(size=1280)  # re-encoded copies
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    with Collection.open(tmp_path / "c.db") as collection:
        collection.store.write_batch(
            [EmbeddedImage(f"/p/{i:05}.jpg", 1, 1, 64, 48, v) for i, v in enumerate(vectors)], []
        )
        collection.refresh_models()
        assert collection.index_kind() == config.ANN_KIND
        found = collection.duplicates()
        ids, stored = collection.store.load_vectors()
        expected = find_duplicates(ids, stored)
    assert len(expected) == 3
    assert sorted(sorted(g.ids) for g in found) == sorted(sorted(g.ids) for g in expected)
    by_ids = {tuple(sorted(g.ids)): g for g in expected}
    for group in found:
        assert group.min_score == pytest.approx(by_ids[tuple(sorted(group.ids))].min_score)
