"""Feature maps -> image descriptors: pooling and object localization.

The network's last feature map (C x h x w, e.g. 1280 x 7 x 7 for 224 px) is turned into one
vector per image:

* ``avg``: the global average (what the classifier head sees);
* ``gem``: generalized mean, (mean x^p)^(1/p) with p = 3, which leans towards the strongest
  activations and is the usual choice for retrieval (Radenovic et al., 2018);
* localization ``mask``: as in selective convolutional descriptor aggregation (SCDA, Wei et
  al., 2017), the channel-summed activation marks where the object is: cells above the
  map's mean, largest connected region kept. Only those cells are pooled, so background
  cells do not dilute the descriptor; the region's bounding box is the object box.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

Pooling = Literal["avg", "gem"]
Localize = Literal["none", "mask", "crop"]

GEM_P = 3.0
_EPS = 1e-6


def pool(fmaps: np.ndarray, pooling: Pooling, mask: np.ndarray | None = None) -> np.ndarray:
    """(N, C, h, w) feature maps -> (N, C), over all cells or only where ``mask`` (N, h, w)."""
    values = np.power(np.maximum(fmaps, _EPS), GEM_P) if pooling == "gem" else fmaps
    if mask is None:
        pooled = values.mean(axis=(2, 3))
    else:
        weights = mask[:, None, :, :].astype(values.dtype)
        pooled = (values * weights).sum(axis=(2, 3)) / np.maximum(weights.sum(axis=(2, 3)), 1.0)
    if pooling == "gem":
        pooled = np.power(pooled, 1.0 / GEM_P)
    return pooled.astype(np.float32)


def object_masks(fmaps: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> boolean (N, h, w): the largest connected region of strong activation."""
    activation = fmaps.sum(axis=1)
    masks = np.zeros(activation.shape, dtype=bool)
    for i, act in enumerate(activation):
        above = act > act.mean()
        labels, count = ndimage.label(above)
        if count == 0:
            masks[i] = True  # a flat map: no object stands out, keep everything
            continue
        sizes = ndimage.sum_labels(above, labels, index=np.arange(1, count + 1))
        masks[i] = labels == (int(np.argmax(sizes)) + 1)
    return masks


def mask_boxes(masks: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Bounding box of each mask as (x0, y0, x1, y1), fractions of the map's width/height."""
    boxes = []
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        h, w = mask.shape
        boxes.append(
            (cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h)
            if len(rows)
            else (0.0, 0.0, 1.0, 1.0)
        )
    return boxes
