"""Descriptors: pooling, multi-scale and object localization, on synthetic maps and real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Collection
from lookalike.encode.features import cell_masks, mask_boxes, object_masks, pool
from lookalike.encode.models import Embedder, builtin_spec, normalize


def test_gem_is_at_least_the_average() -> None:
    rng = np.random.default_rng(0)
    fmaps = rng.uniform(0, 6, size=(3, 16, 5, 5)).astype(np.float32)
    avg, gem = pool(fmaps, "avg"), pool(fmaps, "gem")
    assert (gem >= avg - 1e-5).all()  # power-mean inequality
    assert not np.allclose(gem, avg)


def test_mask_finds_the_hot_region_and_its_box() -> None:
    fmaps = np.full((1, 8, 7, 7), 0.1, dtype=np.float32)
    fmaps[0, :, 4:7, 1:3] = 5.0  # object: rows 4-6, columns 1-2
    fmaps[0, :, 0, 6] = 3.0  # a smaller hot spot elsewhere: not the largest region
    fine = object_masks(fmaps)
    assert fine.shape == (1, 28, 28)
    x0, y0, x1, y1 = mask_boxes(fine)[0]
    # the upsampled region spreads a little into neighbouring cells, no further
    assert 0.5 / 7 <= x0 <= 1 / 7 + 0.02 and 3.5 / 7 <= y0 <= 4 / 7 + 0.02
    assert 3 / 7 - 0.02 <= x1 <= 3.5 / 7 and y1 == 1.0
    cells = cell_masks(fine, 7, 7)
    assert cells[0, 4:7, 1:3].all() and cells[0].sum() == 6
    pooled = pool(fmaps, "avg", cells)
    assert pooled[0, 0] == pytest.approx(5.0)  # background cells left out


def test_average_pooling_is_the_graphs_own_embedding(panda_query: Path) -> None:
    """Average pooling uses the graph's own embedding output, which is the average of the
    feature map that the other descriptors pool in NumPy."""
    embedder = Embedder(builtin_spec("lite0").with_options(pooling="avg"))
    image = Image.open(panda_query).convert("RGB")
    described = embedder.describe([image])
    pooled = normalize(pool(embedder.feature_maps([image], 224), "avg"))
    np.testing.assert_allclose(described.vectors, pooled, atol=1e-5)
    assert described.boxes == [None]


def test_default_descriptor_is_gem(panda_query: Path) -> None:
    """Built-in models pool with GeM (p = 3) by default: (mean x^3)^(1/3) of the feature map,
    which differs from the average."""
    spec = builtin_spec("lite0")
    assert spec.pooling == "gem"
    embedder = Embedder(spec)
    image = Image.open(panda_query).convert("RGB")
    fmaps = embedder.feature_maps([image], 224)
    expected = normalize(np.cbrt(np.mean(np.maximum(fmaps, 1e-6) ** 3, axis=(2, 3))))
    np.testing.assert_allclose(embedder.describe([image]).vectors, expected, atol=1e-5)
    assert not np.allclose(expected, normalize(pool(fmaps, "avg")), atol=1e-3)


def _scene(panda_query: Path) -> tuple[Image.Image, Image.Image]:
    """The panda photo small in the bottom-right corner of a plain grey scene."""
    panda = Image.open(panda_query).convert("RGB")
    scene = Image.new("RGB", (640, 640), (128, 128, 128))
    scene.paste(panda.resize((260, 200)), (360, 420))
    return panda, scene


def test_mask_localization_boxes_the_object(panda_query: Path) -> None:
    _, scene = _scene(panda_query)
    spec = builtin_spec("lite0").with_options(localize="mask")
    (box,) = Embedder(spec).describe([scene]).boxes
    assert box is not None
    x0, y0, x1, y1 = box
    assert (x0 + x1) / 2 > 0.5 and (y0 + y1) / 2 > 0.5  # centred in the bottom-right
    assert (x1 - x0) * (y1 - y0) < 0.6  # and not the whole picture


def test_crop_localization_brings_a_scene_closer_to_its_object(panda_query: Path) -> None:
    panda, scene = _scene(panda_query)
    plain = Embedder(builtin_spec("lite0"))
    cropping = Embedder(builtin_spec("lite0").with_options(localize="crop"))
    reference = plain.describe([panda]).vectors[0]  # the object photo itself
    without = float(plain.describe([scene]).vectors[0] @ reference)
    described = cropping.describe([scene])
    with_crop = float(described.vectors[0] @ reference)
    assert with_crop > without + 0.03, (without, with_crop)
    assert described.boxes[0] is not None


def test_multi_scale_descriptor(panda_query: Path) -> None:
    image = Image.open(panda_query).convert("RGB")
    single = Embedder(builtin_spec("lite0")).describe([image]).vectors
    spec = builtin_spec("lite0").with_options(pooling="gem", scales=(320,))
    assert spec.all_scales == (224, 320)
    multi = Embedder(spec).describe([image]).vectors
    assert multi.shape == single.shape
    assert np.linalg.norm(multi) == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < float(multi[0] @ single[0]) < 0.9999


def test_localized_collection_stores_boxes(photos: Path, tmp_path: Path, panda_query: Path) -> None:
    spec = builtin_spec("lite0").with_options(localize="mask", pooling="gem")
    with Collection.open(tmp_path / "c.db", model=spec) as collection:
        collection.add([photos])
        results = collection.search(panda_query, k=3)
    assert all(r.box is not None for r in results)
    assert all("/panda/" in r.path for r in results)
    x0, y0, x1, y1 = results[0].box  # type: ignore[misc]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def test_query_only_localization(photos: Path, tmp_path: Path, panda_query: Path) -> None:
    """A scene photo searched with localize="crop" against a collection indexed without."""
    _, scene = _scene(panda_query)
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos])
        stored = collection.index().vectors.copy()
        (plain,) = collection.search_detailed([scene], k=5, localize="none")
        (cropped,) = collection.search_detailed([scene], k=5, localize="crop")
        assert plain.query_box is None and cropped.query_box is not None
        assert cropped.results[0].score > plain.results[0].score
        assert sum("/panda/" in r.path for r in cropped.results) >= 4
        np.testing.assert_array_equal(collection.index().vectors, stored)
