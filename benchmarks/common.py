"""What the speed benchmarks share: a synthetic collection and a real query photo."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

import lookalike
from lookalike import Collection
from lookalike.models import ModelSpec, normalize
from lookalike.store import EmbeddedImage

SAMPLE_QUERY = Path(lookalike.__file__).parent / "sample" / "queries" / "query_panda.jpg"


def make_collection(db: Path, size: int, dim: int = 1280, model: ModelSpec | None = None) -> None:
    """``size`` random unit vectors under made-up paths: search time depends on their number
    and dimension, not their content. ``model``: the collection's model (default: the
    default one)."""
    rng = np.random.default_rng(0)
    with Collection.open(db, model=model) as collection:
        for start in range(0, size, 1000):
            count = min(1000, size - start)
            vectors = normalize(rng.normal(size=(count, dim)))
            collection.store.write_batch(
                [
                    EmbeddedImage(f"/collection/{start + i:06}.jpg", 1, 1, 640, 480, v)
                    for i, v in enumerate(vectors)
                ],
                [],
            )


def query_jpeg(width: int) -> bytes:
    """The bundled panda photo (Caltech-101) resized to ``width`` px, as a JPEG."""
    image = Image.open(SAMPLE_QUERY).convert("RGB")
    height = round(width * image.height / image.width)
    out = io.BytesIO()
    image.resize((width, height), Image.Resampling.LANCZOS).save(out, "JPEG", quality=90)
    return out.getvalue()
