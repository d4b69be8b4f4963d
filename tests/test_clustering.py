"""Clustering: synthetic blobs are recovered, and a collection stores and shows its clusters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Collection, config
from lookalike.analysis.clustering import (
    NOISE,
    cluster_images,
    cluster_quality,
    cluster_vectors,
    relabel_by_size,
)
from lookalike.analysis.evaluate import read_labels
from lookalike.analysis.plots import write_contact_sheets
from lookalike.cli import main
from lookalike.encode.models import normalize
from tests.conftest import SAMPLE


def blobs(
    per_blob: list[int], dim: int = 64, spread: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around len(per_blob) random centres, and the blob of each."""
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(len(per_blob), dim)))
    truth = np.repeat(np.arange(len(per_blob)), per_blob)
    points = centres[truth] + spread * rng.normal(size=(len(truth), dim))
    order = rng.permutation(len(truth))
    return normalize(points[order]).astype(np.float32), truth[order]


@pytest.mark.parametrize("pca_dims", [0, 16])
def test_kmeans_recovers_separated_blobs(pca_dims: int) -> None:
    vectors, truth = blobs([40, 35, 30, 25, 20, 15], dim=200)
    labels = cluster_vectors(vectors, k=6, pca_dims=pca_dims)
    quality = cluster_quality(labels, truth.astype(str))
    assert quality.nmi == pytest.approx(1.0) and quality.purity == 1.0
    # numbered by size: the 40-point blob is cluster 0, the 15-point one cluster 5
    assert np.bincount(labels).tolist() == [40, 35, 30, 25, 20, 15]


def test_large_collections_use_mini_batch_kmeans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "CLUSTER_MINIBATCH_ABOVE", 10)
    vectors, truth = blobs([40, 30, 20], dim=32)
    labels = cluster_vectors(vectors, k=3)
    assert cluster_quality(labels, truth.astype(str)).nmi == pytest.approx(1.0)


def test_hdbscan_finds_the_number_of_blobs_and_leaves_outliers_as_noise() -> None:
    vectors, truth = blobs([30] * 6, dim=32)
    rng = np.random.default_rng(1)
    outliers = normalize(rng.normal(size=(8, 32))).astype(np.float32)
    labels = cluster_vectors(np.vstack([vectors, outliers]), k=None, method="hdbscan")
    assert labels.max() + 1 == 6
    # far from every blob: noise (HDBSCAN may still hang one on a cluster's edge)
    assert (labels[-8:] == NOISE).sum() >= 6
    quality = cluster_quality(labels[:-8], truth.astype(str))
    assert quality.nmi > 0.95 and quality.noise_fraction < 0.1


def test_relabel_by_size_keeps_noise() -> None:
    labels = np.array([7, 7, -1, 3, 3, 3, 9, -1])
    assert relabel_by_size(labels).tolist() == [1, 1, -1, 0, 0, 0, 2, -1]


def test_quality_by_hand() -> None:
    # cluster 0: a a b (2 right), cluster 1: b b (2 right), one noise point left out
    quality = cluster_quality(np.array([0, 0, 0, 1, 1, -1]), ["a", "a", "b", "b", "b", "a"])
    assert quality.purity == pytest.approx(4 / 5)
    assert quality.scored == 5 and quality.noise_fraction == pytest.approx(1 / 6)
    perfect = cluster_quality(np.array([1, 1, 0]), ["x", "x", "y"])
    assert perfect.purity == 1.0 and perfect.nmi == pytest.approx(1.0)


def test_kmeans_needs_a_sensible_k() -> None:
    vectors, _ = blobs([5, 5])
    with pytest.raises(ValueError, match="k"):
        cluster_vectors(vectors, k=None)
    with pytest.raises(ValueError, match="cannot make 11 clusters of 10"):
        cluster_vectors(vectors, k=11)


def test_cluster_images_reports_sizes_and_quality() -> None:
    vectors, truth = blobs([12, 8])
    ids = np.arange(20) * 2 + 5
    _, report = cluster_images(ids, vectors, (ids[:10], [str(t) for t in truth[:10]]), k=2)
    assert report.clusters == 2 and report.images == 20 and report.noise == 0
    assert report.sizes == {0: 12, 1: 8}
    assert report.quality is not None and report.quality.scored == 10
    assert report.quality.purity == 1.0
    assert json.loads(json.dumps(report.as_dict()))["quality"]["purity"] == 1.0


# --- a real collection ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The 30 sample photos (6 categories, labelled by folder) indexed once for this module."""
    root = tmp_path_factory.mktemp("clustering")
    photos = root / "photos"
    shutil.copytree(SAMPLE / "collection", photos)
    db = root / "c.db"
    with Collection.open(db) as collection:
        collection.add([photos])
        collection.set_labels(read_labels(photos))
    return photos, db


@pytest.fixture
def db(indexed: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the indexed collection (clustering writes to it)."""
    copy = tmp_path / "c.db"
    shutil.copy(indexed[1], copy)
    return copy


def test_collection_cluster_stores_clusters_that_search_shows(db: Path) -> None:
    with Collection.open(db) as collection:
        assert collection.clusters() == {}
        report = collection.cluster(6)
        assert report.method == "kmeans" and report.clusters == 6 and report.images == 30
        assert report.quality is not None and report.quality.purity >= 0.9
        counts = collection.clusters()
        assert sorted(counts) == list(range(6)) and sum(counts.values()) == 30
        hits = collection.search(SAMPLE / "queries" / "query_panda.jpg", k=5)
        assert all(hit.cluster is not None for hit in hits)
        panda_clusters = {hit.cluster for hit in hits if "/panda/" in hit.path}
        assert len(panda_clusters) == 1  # the pandas are one cluster

        auto = collection.cluster(auto=True)
        assert auto.method == "hdbscan" and sum(auto.sizes.values()) == 30
        assert collection.clusters() == auto.sizes  # replaced, not added to
        with pytest.raises(ValueError, match="auto"):
            collection.cluster()


def test_contact_sheets_one_valid_image_per_cluster(db: Path, tmp_path: Path) -> None:
    with Collection.open(db) as collection:
        collection.cluster(6)
        sheets = write_contact_sheets(collection, tmp_path / "sheets", per_cluster=4, thumb=64)
    assert [p.name for p in sheets] == [f"cluster-{c:03d}.jpg" for c in range(6)]
    for sheet in sheets:
        with Image.open(sheet) as image:
            image.verify()
        with Image.open(sheet) as image:
            # 4 thumbnails of 64 px in one row under a title bar
            assert image.width == 4 * (64 + 4) + 4 and image.height > 64


def test_cli_cluster_json_and_sheets(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheets = tmp_path / "sheets"
    code = main(["cluster", "--db", str(db), "--k", "6", "--sheets", str(sheets), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["clusters"] == 6 and out["quality"]["purity"] >= 0.9
    assert len(out["sheets"]) == 6 and all(Path(p).is_file() for p in out["sheets"])

    code = main(["cluster", "--db", str(db), "--auto"])
    text = capsys.readouterr().out
    assert code == 0 and "hdbscan" in text and "purity" in text


def test_cli_cluster_needs_k_or_auto(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cluster", "--db", str(db)])
    capsys.readouterr()
