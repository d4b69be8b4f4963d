"""Large photos in the indexing path: decoded small (JPEG draft) or shrunk right after
decoding (other formats), so that a batch never holds full-size photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.encode.models import Embedder, builtin_spec
from lookalike.image.files import Candidate
from lookalike.image.preprocess import shrink
from lookalike.pipeline.indexer import _decode_one
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(builtin_spec("lite0", "fp32"), threads=1)


def _large(tmp_path: Path, fmt: str, suffix: str) -> Path:
    """A real photo (the bundled panda) upscaled to 2400 x 1800."""
    photo = Image.open(SAMPLE / "queries" / "query_panda.jpg").convert("RGB")
    path = tmp_path / f"large{suffix}"
    photo.resize((2400, 1800), Image.Resampling.BICUBIC).save(path, fmt)
    return path


@pytest.mark.parametrize(("fmt", "suffix"), [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp")])
def test_large_photos_reach_the_model_small(
    tmp_path: Path, embedder: Embedder, fmt: str, suffix: str
) -> None:
    path = _large(tmp_path, fmt, suffix)
    decoded = _decode_one(embedder, Candidate(str(path), path.stat().st_size, 0))
    assert isinstance(decoded, Image.Image)
    # JPEG: draft mode decodes at 1/8 (225 >= 224); the others are decoded in full and
    # shrunk by 4, keeping twice the model's side (450 >= 448).
    assert decoded.size == ((300, 225) if fmt == "JPEG" else (600, 450))
    full = Image.open(path).convert("RGB")
    vectors = embedder.embed_images([decoded, full])
    # (JPEG draft decoding at 1/8 then resizing 300 -> 224 is the furthest from a full decode)
    assert float(vectors[0] @ vectors[1]) > (0.985 if fmt == "JPEG" else 0.995)


def test_shrink_keeps_twice_the_side_and_leaves_small_images_alone() -> None:
    image = Image.new("RGB", (3000, 2000))
    assert shrink(image, 224).size == (750, 500)  # factor 4: 500 >= 448
    assert shrink(image, 448).size == (1500, 1000)  # factor 2
    small = Image.new("RGB", (900, 600))
    assert shrink(small, 224) is small
    pixels = np.asarray(shrink(Image.new("RGB", (1000, 1000), (10, 200, 30)), 100))
    assert pixels.shape == (200, 200, 3) and (pixels == (10, 200, 30)).all()
