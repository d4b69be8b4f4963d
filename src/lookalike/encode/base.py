"""The encoder's contract: decoded images -> unit vectors.

An encoder plugs in by implementing :class:`ImageEncoder` (today
:class:`lookalike.encode.models.Embedder`, ONNX Runtime, and
:class:`lookalike.encode.encoders.CompositeEncoder`) and a line in
:func:`lookalike.encode.encoders.load_encoder`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from lookalike.types import Description

if TYPE_CHECKING:
    from PIL import Image


@runtime_checkable
class ImageEncoder(Protocol):
    """Decoded RGB images -> L2-normalised float32 vectors of one fixed size.

    Must be thread-safe (several query workers share one instance). ``decode_side`` tells the
    decoder the shortest side worth decoding (JPEG draft mode can decode at 1/2..1/8 scale).
    """

    @property
    def decode_side(self) -> int: ...

    def describe(self, images: list[Image.Image]) -> Description:
        """Vectors (N, D) float32 unit rows, and the object box of each image (or None)."""
        ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Only the vectors of :meth:`describe`."""
        ...

    def imagenet_probabilities(self, images: list[Image.Image]) -> np.ndarray:
        """(N, 1000) ImageNet class probabilities (``lookalike classify``); raises
        :class:`~lookalike.errors.ModelError` for a model without an ImageNet head."""
        ...
