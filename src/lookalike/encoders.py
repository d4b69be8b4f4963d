"""Which :class:`~lookalike.interfaces.ImageEncoder` runs a collection's model, and sharing
loaded encoders between collections and threads.

Today every :class:`~lookalike.models.ModelSpec` runs on :class:`lookalike.models.Embedder`
(ONNX Runtime). A new encoder (int8, text) plugs in by adding a branch to
:func:`load_encoder` keyed on the spec (e.g. a ``precision`` field), returning any object
with ``decode_side``, ``describe`` and ``embed_images``.
"""

from __future__ import annotations

import threading

from lookalike.interfaces import ImageEncoder
from lookalike.models import ModelSpec


def load_encoder(spec: ModelSpec, *, threads: int | None = None) -> ImageEncoder:
    """Load the encoder of ``spec``; ``threads`` cores per call (None: all of them)."""
    from lookalike.models import Embedder

    return Embedder(spec, threads=threads)


class EncoderPool:
    """Loaded encoders by (spec, threads), each loaded once however many ask for it."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[ModelSpec, int | None], ImageEncoder] = {}
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec, *, threads: int | None = None) -> ImageEncoder:
        key = (spec, threads)
        with self._lock:
            found = self._loaded.get(key)
            if found is None:
                found = load_encoder(spec, threads=threads)
                self._loaded[key] = found
            return found

    def put(self, spec: ModelSpec, encoder: ImageEncoder, *, threads: int | None = None) -> None:
        """Share an encoder loaded elsewhere (the service's query model)."""
        with self._lock:
            self._loaded.setdefault((spec, threads), encoder)
