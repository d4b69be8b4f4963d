"""The default vector codec: mean-centring fitted on the collection, from CODEC_MIN_IMAGES on,
refitted as the collection grows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lookalike import Collection, config
from lookalike.encode.models import normalize
from lookalike.index import pca as compression
from lookalike.store.records import EmbeddedImage


def _add(collection: Collection, start: int, count: int, rng: np.random.Generator) -> None:
    # vectors sharing a strong common direction, as real image descriptors do
    common = np.zeros(64, np.float32)
    common[0] = 3.0
    vectors = normalize(rng.normal(size=(count, 64)) + common)
    collection.store.write_batch(
        [EmbeddedImage(f"/c/{start + i:05}.jpg", 1, 1, 4, 4, v) for i, v in enumerate(vectors)],
        [],
    )
    collection.refresh_models()


def test_centring_codec_subtracts_the_mean_and_keeps_dimensions() -> None:
    rng = np.random.default_rng(0)
    vectors = normalize(rng.normal(size=(50, 16)) + 2.0)
    pca = compression.fit(vectors, 0)
    assert pca.dims == 0 and pca.components.shape == (0, 16)
    out = pca.transform(vectors)
    expected = normalize(vectors - vectors.mean(axis=0))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    again = compression.Pca.from_bytes(pca.to_bytes())
    np.testing.assert_allclose(again.transform(vectors), out, atol=1e-6)


def test_new_collection_centres_once_it_has_enough_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with Collection.open(tmp_path / "c.db") as collection:
        assert json.loads(collection.store.get_meta("pca") or "{}") == config.DEFAULT_CODEC
        assert collection.spec.pooling == config.DEFAULT_POOLING == "gem"
        _add(collection, 0, config.CODEC_MIN_IMAGES - 1, rng)
        assert collection.pca() is None  # too few: raw cosine
        assert collection.index().vectors.shape[1] == 64
        _add(collection, 100, 1, rng)
        first = collection.pca()
        assert first is not None and first.dims == 0
        assert first.fitted_on == config.CODEC_MIN_IMAGES
        index = collection.index()
        _, stored = collection.store.load_vectors()
        np.testing.assert_allclose(index.vectors, first.transform(stored), atol=1e-6)
        # grown by more than 10%: refitted, and the index follows the new mean
        _add(collection, 200, 40, rng)
        second = collection.pca()
        assert second is not None and second.fitted_on == len(collection) == 60
        assert not np.allclose(second.mean, first.mean)
        _, stored = collection.store.load_vectors()
        np.testing.assert_allclose(collection.index().vectors, second.transform(stored), atol=1e-6)


def test_centring_ignores_what_every_image_shares(tmp_path: Path) -> None:
    """Two images near each other apart from a direction every image shares: raw cosine is
    dominated by it, centred cosine finds the true neighbour first."""
    rng = np.random.default_rng(2)
    with Collection.open(tmp_path / "c.db") as collection:
        _add(collection, 0, 60, rng)
        ids, stored = collection.store.load_vectors()
        query = stored[5] + 0.05 * rng.normal(size=64).astype(np.float32)
        hit = collection.search_many([normalize(query[None])[0]], k=1)[0][0]
        assert hit.id == int(ids[5])
