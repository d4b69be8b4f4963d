"""What the speed benchmarks share: a synthetic collection and a real query photo."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

import lookalike
from lookalike import Collection
from lookalike.encode.models import ModelSpec, normalize
from lookalike.store.records import EmbeddedImage

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


def wall_query_jpeg(width: int) -> bytes:
    """The bundled panda photo as a framed picture on a plain, unevenly lit wall, ``width``
    px wide (4:3): a query in which the default border localization finds an object, so the
    query is described twice (whole photo and object) and searched twice."""
    height = width * 3 // 4
    rng = np.random.default_rng(0)
    light = np.linspace(0.85, 1.1, width)[None, :, None]
    wall = np.array([215.0, 205.0, 185.0])[None, None, :] * light
    wall = wall + rng.normal(0, 2.5, size=(height, width, 1))
    scene = Image.fromarray(
        np.clip(np.broadcast_to(wall, (height, width, 3)), 0, 255).astype(np.uint8)
    )
    picture = Image.open(SAMPLE_QUERY).convert("RGB")
    ph = height * 2 // 5
    pw = round(ph * picture.width / picture.height)
    x0, y0 = (width - pw) // 2, (height - ph) // 2
    frame = max(4, width // 60)
    scene.paste((40, 30, 25), (x0 - frame, y0 - frame, x0 + pw + frame, y0 + ph + frame))
    scene.paste(picture.resize((pw, ph), Image.Resampling.LANCZOS), (x0, y0))
    out = io.BytesIO()
    scene.save(out, "JPEG", quality=90)
    return out.getvalue()
