"""int8 models: quantization from the bundled calibration images, precision in the spec."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from lookalike import Collection, config
from lookalike.cli import main
from lookalike.encode.models import (
    Embedder,
    ModelError,
    ModelSpec,
    builtin_spec,
    graph_path,
    onnx_spec,
)
from lookalike.encode.quantize import LITE_OP_TYPES, calibration_files, quantize_model
from tests.conftest import SAMPLE, make_image
from tests.test_models import _tiny_model

SAMPLE_FILES = sorted((SAMPLE / "collection").rglob("*.jpg"))


@pytest.fixture(scope="module")
def int8_lite0() -> Embedder:
    return Embedder(builtin_spec("lite0", "int8"))


@pytest.fixture(scope="module")
def fp32_lite0() -> Embedder:
    return Embedder(builtin_spec("lite0", "fp32"))


def test_int8_graph_is_quantized_cached_and_deterministic(tmp_path: Path) -> None:
    spec = builtin_spec("lite0", "int8")
    path = graph_path(spec)
    assert path.parent == config.cache_dir() / "models" and "int8" in path.name
    graph = onnx.load(str(path))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(int(np.prod(t.dims)) for t in int8_weights) > 3_000_000  # Lite0's ~3.4M weights
    mtime = path.stat().st_mtime_ns
    assert graph_path(spec) == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    # Built again from scratch on the same images: the same bytes.
    again = tmp_path / "again.onnx"
    fp32 = graph_path(builtin_spec("lite0", "fp32"))
    quantize_model(fp32, again, spec, calibration_files(SAMPLE), LITE_OP_TYPES)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()


def test_int8_vectors_are_close_to_fp32_and_rank_the_same(
    int8_lite0: Embedder, fp32_lite0: Embedder
) -> None:
    images = [Image.open(p).convert("RGB") for p in SAMPLE_FILES]
    fp32 = fp32_lite0.embed_images(images)
    int8 = int8_lite0.embed_images(images)
    assert int8.dtype == np.float32 and int8.shape == fp32.shape
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, rtol=1e-5)
    cosines = (fp32 * int8).sum(axis=1)
    assert cosines.mean() > 0.98 and cosines.min() > 0.93
    # Each image's nearest other image is of the same category under both precisions.
    categories = [p.parent.name for p in SAMPLE_FILES]
    for vectors in (fp32, int8):
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, -1)
        nearest = scores.argmax(axis=1)
        same = np.mean([categories[i] == categories[j] for i, j in enumerate(nearest)])
        assert same >= 0.9


def _transformed(path: Path) -> list[Image.Image]:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    out = io.BytesIO()
    image.save(out, "JPEG", quality=40)
    return [
        image.resize((w * 3, h * 3), Image.Resampling.BICUBIC),
        image.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        Image.open(io.BytesIO(out.getvalue())).convert("RGB"),
        image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
        image.rotate(5, resample=Image.Resampling.BILINEAR, expand=False),
    ]


def test_int8_transformed_copies_find_their_original_first(tmp_path: Path, photos: Path) -> None:
    with Collection.open(tmp_path / "c.db", model=builtin_spec("lite0", "int8")) as collection:
        collection.add([photos])
        for original in sorted(photos.rglob("*.jpg"))[::3]:
            for copy in _transformed(original):
                assert collection.search(copy, k=1)[0].path == str(original)


def test_precision_is_recorded_and_never_mixed(tmp_path: Path, photos: Path) -> None:
    db = tmp_path / "c.db"
    with Collection.open(db, model=builtin_spec("lite0", "int8")) as collection:
        collection.add([photos])
    with Collection.open(db) as collection:  # no model asked: the recorded one
        assert collection.spec.precision == "int8"
    with pytest.raises(ValueError, match=r"\(int8\), not efficientnet-lite0 \(fp32\)"):
        Collection.open(db, model=builtin_spec("lite0", "fp32"))
    assert main(["index", str(photos), "--db", str(db), "--precision", "fp32"]) == 2
    assert main(["index", str(photos), "--db", str(db), "--precision", "int8"]) == 0
    # A model named without a precision keeps the collection's (an fp32 one made before
    # int8 became the default is not refused).
    assert main(["index", str(photos), "--db", str(db), "--model", "lite0"]) == 0
    with Collection.open(db, model="lite0") as collection:
        assert collection.spec.precision == "int8"
    old = tmp_path / "old.db"
    with Collection.open(old, model=builtin_spec("lite0", "fp32")):
        pass
    assert main(["index", str(photos), "--db", str(old), "--model", "lite0"]) == 0
    with Collection.open(old, model="lite0") as collection:
        assert collection.spec.precision == "fp32" and len(collection) == 30


def test_specs_recorded_before_precision_existed_read_as_fp32() -> None:
    data = json.loads(builtin_spec("lite0", "fp32").to_json())
    del data["precision"], data["calibration"]
    spec = ModelSpec.from_json(json.dumps(data))
    assert spec.precision == "fp32" and spec == builtin_spec("lite0", "fp32")


def test_cli_info_reports_precision(tmp_path: Path, photos: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "c.db"
    assert main(["index", str(photos), "--db", str(db), "--precision", "int8"]) == 0
    capsys.readouterr()
    assert main(["info", "--db", str(db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["precision"] == "int8" and info["images"] == 30


def test_own_onnx_model_needs_and_uses_a_calibration_folder(tmp_path: Path) -> None:
    spec = onnx_spec(_tiny_model(tmp_path / "tiny.onnx", four_d=False), input_size=32)
    with pytest.raises(ModelError, match="calibration"):
        spec.with_precision("int8")
    calibration = tmp_path / "calibration"
    for i in range(6):
        make_image(calibration / f"{i}.png", seed=100 + i, fmt="PNG")
    int8_spec = spec.with_precision("int8", calibration)
    assert int8_spec.calibration == str(calibration.resolve())
    path = graph_path(int8_spec)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
    images = [Image.open(p) for p in sorted(calibration.iterdir())]
    fp32 = Embedder(spec).embed_images(images)
    int8 = Embedder(int8_spec).embed_images(images)
    assert (fp32 * int8).sum(axis=1).min() > 0.98
    # Another calibration folder is another graph; an empty one is refused.
    other = tmp_path / "other"
    shutil.copytree(calibration, other)
    os.remove(other / "0.png")
    assert graph_path(spec.with_precision("int8", other)) != path
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no image files"):
        graph_path(spec.with_precision("int8", empty))


def test_cli_quantizes_own_onnx_model(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx", four_d=True)
    folder = tmp_path / "imgs"
    for i in range(4):
        make_image(folder / f"{i}.png", seed=i, fmt="PNG")
    db = tmp_path / "c.db"
    args = ["index", str(folder), "--db", str(db), "--model", str(model), "--input-size", "32"]
    assert main([*args, "--precision", "int8"]) == 2  # no calibration folder named
    assert main([*args, "--precision", "int8", "--calibration", str(folder)]) == 0
    with Collection.open(db) as collection:
        assert collection.spec.precision == "int8" and len(collection) == 4


def test_default_precision_follows_the_measurements(tmp_path: Path) -> None:
    assert builtin_spec("lite0").precision == "int8"  # in config.INT8_BY_DEFAULT
    assert builtin_spec("lite2").precision == "fp32"
    with Collection.open(tmp_path / "new.db") as collection:
        assert collection.spec == builtin_spec(config.DEFAULT_MODEL)
        assert collection.spec.precision == "int8"
