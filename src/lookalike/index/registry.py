"""Which :class:`~lookalike.index.base.VectorIndex` holds a collection's vectors in memory.

A new index plugs in with one entry in :data:`INDEX_KINDS`: kind -> ``"module:function"``,
where ``function(ids, vectors) -> VectorIndex`` builds it from ids (int64, ascending) and codec
output vectors. Imported only when used, so an optional engine is needed only by its users.

:data:`INDEX_SETTINGS` is the one list of what a collection's ``index`` setting may be (the
CLI's ``--index`` choices, :mod:`lookalike.index.persistent`): ``auto`` (by size) or a kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from lookalike.errors import InvalidInput, Unavailable
from lookalike.index.base import VectorIndex

INDEX_KINDS: dict[str, str] = {
    "exact": "lookalike.index.exact:ExactIndex",
    "ivf": "lookalike.index.ann:build_ivf",
    "hnsw": "lookalike.index.ann:build_hnsw",
}
#: What a collection's ``index`` setting may be: ``auto`` (exact below
#: :data:`lookalike.config.ANN_MIN_IMAGES` images, approximate from there on) or a kind.
INDEX_SETTINGS: tuple[str, ...] = ("auto", *INDEX_KINDS)


def build_index(kind: str, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
    if kind not in INDEX_KINDS:
        raise InvalidInput(f"unknown index {kind!r}; known: {', '.join(INDEX_KINDS)}")
    module_name, _, name = INDEX_KINDS[kind].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise Unavailable(f"index {kind!r} needs an optional part: {exc}") from exc
    factory: Callable[[np.ndarray, np.ndarray], VectorIndex] = getattr(module, name)
    return factory(ids, vectors)
