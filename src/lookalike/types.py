"""Small value types shared by every part (models, store, search, service).

Imports nothing but NumPy, so that any module can use them without pulling in a model
runtime, a database driver or a web framework.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: An object box (x0, y0, x1, y1) as fractions of the image's width and height.
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Description:
    """Unit vectors of a batch of images, and the object box of each (or None)."""

    vectors: np.ndarray
    boxes: list[Box | None]


@dataclass(frozen=True)
class IndexCapabilities:
    """What a :class:`lookalike.index.base.VectorIndex` can do, so that callers can choose.

    ``exact``: results are the true top-k (False for an approximate index).
    ``filter``: ``search(filter=...)`` is honoured inside the index (else the caller must
    over-fetch and filter).
    ``reconstruct``: ``vectors_of`` returns stored vectors (query expansion needs it).
    ``snapshot``: ``add``/``remove`` return a new index and leave this one unchanged, so that
    searches already running on it see a consistent set (False: the index changes in place,
    and is safe to search meanwhile).
    ``persist``: ``save`` writes it and ``load_index`` reads it back.
    """

    exact: bool = True
    filter: bool = True
    reconstruct: bool = True
    snapshot: bool = True
    persist: bool = True
