"""Which :class:`~lookalike.encode.base.ImageEncoder` runs a collection's model, and sharing
loaded encoders between collections and threads.

A single model's :class:`~lookalike.encode.models.ModelSpec` runs on
:class:`lookalike.encode.models.Embedder` (ONNX Runtime, fp32 or int8); a composite one
(``lite0+lite2``, the quality tier) on :class:`CompositeEncoder`. A new encoder (text, say)
plugs in by adding a branch to :func:`load_encoder` keyed on the spec, returning any object
with ``decode_side``, ``describe`` and ``embed_images``.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from lookalike.encode.base import ImageEncoder
from lookalike.encode.models import ModelSpec
from lookalike.errors import ModelError
from lookalike.types import Description


def load_encoder(spec: ModelSpec, *, threads: int | None = None) -> ImageEncoder:
    """Load the encoder of ``spec``; ``threads`` cores per call (None: all of them)."""
    from lookalike.encode.models import Embedder

    if spec.parts:
        return CompositeEncoder([Embedder(part, threads=threads) for part in spec.parts])
    return Embedder(spec, threads=threads)


class CompositeEncoder:
    """Several models' descriptors of the same decoded images, concatenated.

    Each image is decoded once (at the largest side any part needs) and every model prepares
    its own input from it (Lite0 at 224, Lite2 at 260). Each part's vector is a unit vector;
    the concatenation is scaled by 1/sqrt(parts), so it is one too and every model weighs the
    same in a cosine. The collection's codec (mean-centring by default) then applies to the
    whole vector: measured against centring each part on its own, within 0.05 points on
    the category and wall benchmarks and 1 point (3 queries of 303) below on the scene
    photos (docs/EVALUATION.md, "quality tier").
    """

    def __init__(self, parts: list[ImageEncoder]) -> None:
        if len(parts) < 2:
            raise ModelError("a composite model needs at least two models")
        self.parts = parts

    @property
    def decode_side(self) -> int:
        return max(part.decode_side for part in self.parts)

    def describe(self, images: list[Image.Image]) -> Description:
        """The parts' vectors side by side; the object boxes are the first part's."""
        described = [part.describe(images) for part in self.parts]
        vectors = np.concatenate([d.vectors for d in described], axis=1)
        vectors *= np.float32(1 / np.sqrt(len(described)))
        return Description(vectors.astype(np.float32, copy=False), described[0].boxes)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.describe(images).vectors

    def imagenet_probabilities(self, images: list[Image.Image]) -> np.ndarray:
        """The first part's ImageNet head (every built-in part has one)."""
        return self.parts[0].imagenet_probabilities(images)


class EncoderPool:
    """Loaded encoders by (spec, threads), each loaded once however many ask for it."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[ModelSpec, int | None], ImageEncoder] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[ModelSpec, int | None], threading.Lock] = {}

    def get(self, spec: ModelSpec, *, threads: int | None = None) -> ImageEncoder:
        """The encoder, loaded on first use; loading one model never holds up the others."""
        key = (spec, threads)
        with self._lock:
            found = self._loaded.get(key)
            if found is not None:
                return found
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                found = self._loaded.get(key)
            if found is None:
                found = load_encoder(spec, threads=threads)
                with self._lock:
                    found = self._loaded.setdefault(key, found)
            return found

    def put(self, spec: ModelSpec, encoder: ImageEncoder, *, threads: int | None = None) -> None:
        """Share an encoder loaded elsewhere (the service's query model)."""
        with self._lock:
            self._loaded.setdefault((spec, threads), encoder)
