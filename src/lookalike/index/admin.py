"""Administering a collection's search index: choosing its kind (``lookalike index --index``)
and describing it (``lookalike info``). The index itself is chosen by size and kept beside the
store by :mod:`lookalike.index.persistent`."""

from __future__ import annotations

from collections.abc import Callable

from lookalike.index import persistent as persistent_index
from lookalike.index.base import VectorIndex
from lookalike.index.persistent import FollowedIndex
from lookalike.store.base import MetadataStore


def choose(store: MetadataStore, kind: str) -> None:
    """Set the ``index`` setting ("auto", "exact", "ivf" or "hnsw"); going back to "exact"
    deletes the approximate index saved beside the store."""
    persistent_index.set_setting(store, kind)
    saved = store.index_file()
    if kind == "exact" and saved is not None:
        persistent_index.remove_index_files(saved)


def describe(
    store: MetadataStore,
    kind: str,
    codec_dims: int | None,
    exact: Callable[[], VectorIndex],
    followed: Callable[[], FollowedIndex],
) -> dict[str, object]:
    """Which index searches use (``kind``) and what it holds: for the exact index (``exact``
    gives it), the size of its float32 vectors (``codec_dims`` when the codec reduces them,
    else the stored vectors': a codec of 0 dims centres without reducing); for an approximate
    one, what ``followed`` (the index held, brought up to date) says."""
    info: dict[str, object] = {
        "setting": persistent_index.setting(store),
        "kind": kind,
        "approximate": kind != "exact",
        "dims": codec_dims,
    }
    if kind == "exact":
        dims = codec_dims or _stored_dims(store, exact())
        info["bytes_per_image"] = 4 * dims
    else:
        info.update(followed().describe())
    return info


def _stored_dims(store: MetadataStore, index: VectorIndex) -> int:
    """Dimensions of the stored vectors (0 in an empty collection)."""
    ids = index.ids[:1]
    return int(store.vectors_of(ids).shape[1]) if len(ids) else 0
