"""Bring-your-own ONNX model, with a tiny model the test builds; preprocessing; model specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from lookalike import Collection
from lookalike.encode.models import Embedder, ModelError, ModelSpec, builtin_spec, onnx_spec
from lookalike.image.preprocess import fit_square, normalize_batch
from tests.conftest import make_image


def _tiny_model(path: Path, *, four_d: bool) -> Path:
    """A 3->8 channel 3x3 conv (+ ReLU); output a feature map or its pooled vector."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["fmap"]),
    ]
    if four_d:
        out = helper.make_tensor_value_info("fmap", TensorProto.FLOAT, ["n", 8, "h", "w"])
    else:
        nodes += [
            helper.make_node("GlobalAveragePool", ["fmap"], ["p"]),
            helper.make_node("Flatten", ["p"], ["vec"]),
        ]
        out = helper.make_tensor_value_info("vec", TensorProto.FLOAT, ["n", 8])
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [out],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("four_d", [True, False])
def test_plugged_in_onnx_model_indexes_and_searches(tmp_path: Path, four_d: bool) -> None:
    spec = onnx_spec(_tiny_model(tmp_path / "tiny.onnx", four_d=four_d), input_size=32)
    assert spec.output == ("fmap" if four_d else "vec")
    folder = tmp_path / "imgs"
    for i in range(5):
        make_image(folder / f"{i}.png", seed=i, fmt="PNG")
    with Collection.open(tmp_path / "c.db", model=spec) as collection:
        assert collection.add([folder]).added == 5
        _, vectors = collection.store.load_vectors()
        assert vectors.shape == (5, 8)
        # unit vectors, as stored: float16 (2 bytes a dimension), 11 bits of precision
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-3)
        best = collection.search(Image.open(folder / "3.png"), k=1)[0]
        assert best.path == str(folder / "3.png") and best.score == pytest.approx(1.0, abs=1e-3)
    # the spec is stored: reopening without naming the model uses the same one
    with Collection.open(tmp_path / "c.db") as again:
        assert again.spec == spec


def test_plugged_in_model_wrong_output_is_a_clear_error(tmp_path: Path) -> None:
    path = _tiny_model(tmp_path / "tiny.onnx", four_d=False)
    with pytest.raises(ModelError, match="no output"):
        Embedder(onnx_spec(path, input_size=32, output="nope"))
    with pytest.raises(ModelError, match="no ONNX model"):
        onnx_spec(tmp_path / "missing.onnx", input_size=32)


def test_unknown_builtin_model() -> None:
    with pytest.raises(ModelError, match="unknown model"):
        builtin_spec("resnet9000")


def test_spec_json_round_trip() -> None:
    spec = builtin_spec("lite2")
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert spec.input_size == 260


def test_fit_square_crop_and_squash() -> None:
    image = Image.new("RGB", (400, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 50, 100))  # red strip on the far left
    cropped = np.asarray(fit_square(image, 64, "crop"))
    squashed = np.asarray(fit_square(image, 64, "squash"))
    assert cropped.shape == squashed.shape == (64, 64, 3)
    assert cropped[32, 0, 0] < 10  # the left strip is cropped away
    assert squashed[32, 0, 0] > 200  # and kept when squashing


def test_normalize_batch() -> None:
    pixels = np.array([[[[0, 127, 255]]]], dtype=np.uint8)  # N=1, 1x1, RGB
    out = normalize_batch(pixels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert out.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(
        out.ravel(), [(v / 255 - 0.5) / 0.25 for v in (0, 127, 255)], atol=1e-5
    )


def test_graph_is_built_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lookalike.encode import models

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    first = models.builtin_graph_path("efficientnet-lite0")
    stamp = first.stat().st_mtime_ns
    assert models.builtin_graph_path("efficientnet-lite0") == first
    assert first.stat().st_mtime_ns == stamp
    assert list(first.parent.glob("*.tmp")) == []


def test_collection_from_another_descriptor_version_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses
    import logging

    with Collection.open(tmp_path / "c.db") as collection:
        old = dataclasses.replace(collection.spec, descriptor_version=0)
        collection.store.set_meta("model", old.to_json())
    with caplog.at_level(logging.WARNING), Collection.open(tmp_path / "c.db") as reopened:
        assert reopened.spec.descriptor_version == builtin_spec("lite0").descriptor_version
    assert "index it again" in caplog.text
