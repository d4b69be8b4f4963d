"""Vector codecs: which :class:`~lookalike.index.base.VectorCodec` a collection uses, fitting
it on the collection's vectors, and reading it back.

A collection's codec settings are JSON in the store's meta key ``pca`` (kept for existing
collections: ``{"dims": 256, "whiten": false}``, or ``{}`` for none) and may name a ``kind``
(default ``"pca"``). The fitted codec is the store artifact ``pca`` (its ``to_bytes``).

A new codec plugs in with one entry in :data:`CODEC_KINDS`: kind -> ``"module:Class"``,
where the class has ``fit(vectors, **settings) -> codec`` and ``from_bytes(data) -> codec``
classmethods (and the protocol's ``dims``/``transform``/``to_bytes``).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from lookalike.errors import InvalidInput
from lookalike.index.base import IdentityCodec, VectorCodec

CODEC_KINDS: dict[str, str] = {
    "pca": "lookalike.index.pca:Pca",
}


class CodecClass(Protocol):
    def fit(self, vectors: np.ndarray, **settings: Any) -> VectorCodec: ...
    def from_bytes(self, data: bytes) -> VectorCodec: ...


def codec_class(kind: str) -> CodecClass:
    if kind not in CODEC_KINDS:
        raise InvalidInput(f"unknown vector codec {kind!r}; known: {', '.join(CODEC_KINDS)}")
    module_name, _, name = CODEC_KINDS[kind].partition(":")
    found: CodecClass = getattr(importlib.import_module(module_name), name)
    return found


def fit_codec(settings: dict[str, Any], vectors: np.ndarray) -> VectorCodec:
    """Fit the codec the settings describe (``kind`` plus its own keyword arguments)."""
    options = dict(settings)
    kind = options.pop("kind", "pca")
    return codec_class(kind).fit(vectors, **options)


def load_codec(settings: dict[str, Any], data: bytes | None) -> VectorCodec:
    """The fitted codec of a collection (identity when it has none)."""
    if not settings or not data:
        return IdentityCodec()
    return codec_class(settings.get("kind", "pca")).from_bytes(data)
