"""Feature maps -> image descriptors: pooling and object localization.

The network's last feature map (C x h x w, e.g. 1280 x 7 x 7 for 224 px) is turned into one
vector per image:

* ``avg``: the global average (what the classifier head sees);
* ``gem``: generalized mean, (mean x^p)^(1/p) with p = 3, which leans towards the strongest
  activations and is the usual choice for retrieval (Radenovic et al., 2018);
* localization ``mask``: as in selective convolutional descriptor aggregation (SCDA, Wei et
  al., 2017), the channel-summed activation marks where the object is: the largest
  connected region above a threshold. Only those cells are pooled, so background cells do
  not dilute the descriptor; the region's bounding box is the object box.

Two departures from SCDA, measured on the scene queries of benchmarks/eval_localization.py
(box IoU against the true object box, 151 queries): the activation map is upsampled 4x
(bilinear) before thresholding, and the threshold is mean + 0.5 std rather than the mean,
which gave mean IoU 0.436 instead of 0.394 (IoU >= 0.5: 45% instead of 32%).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Pooling = Literal["avg", "gem"]
Localize = Literal["none", "mask", "crop", "saliency", "border"]

GEM_P = 3.0
_EPS = 1e-6
#: Activation maps are upsampled this much before thresholding (finer boxes).
MASK_UPSAMPLE = 4
#: Cells above mean + this many standard deviations belong to the object.
MASK_THRESHOLD_STD = 0.5


def pool(fmaps: np.ndarray, pooling: Pooling, mask: np.ndarray | None = None) -> np.ndarray:
    """(N, C, h, w) feature maps -> (N, C), over all cells or only where ``mask`` (N, h, w)."""
    if pooling == "gem":
        clipped = np.maximum(fmaps, _EPS)
        # x * x * x: several times faster than np.power with a float exponent
        values = clipped * clipped * clipped if GEM_P == 3.0 else np.power(clipped, GEM_P)
    else:
        values = fmaps
    if mask is None:
        pooled = values.mean(axis=(2, 3))
    else:
        weights = mask[:, None, :, :].astype(values.dtype)
        pooled = (values * weights).sum(axis=(2, 3)) / np.maximum(weights.sum(axis=(2, 3)), 1.0)
    if pooling == "gem":
        pooled = np.power(pooled, 1.0 / GEM_P)
    return pooled.astype(np.float32)


def object_masks(fmaps: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> boolean (N, h*U, w*U), U = MASK_UPSAMPLE: the object's region."""
    from scipy import ndimage  # imported here: scipy adds 0.2 s to every CLI start

    activation = fmaps.sum(axis=1)
    n, h, w = activation.shape
    masks = np.zeros((n, h * MASK_UPSAMPLE, w * MASK_UPSAMPLE), dtype=bool)
    for i, act in enumerate(activation):
        fine = ndimage.zoom(act, MASK_UPSAMPLE, order=1, grid_mode=True, mode="nearest")
        above = fine > fine.mean() + MASK_THRESHOLD_STD * fine.std()
        labels, count = ndimage.label(above)
        if count == 0:
            masks[i] = True  # a flat map: no object stands out, keep everything
            continue
        sizes = ndimage.sum_labels(above, labels, index=np.arange(1, count + 1))
        masks[i] = labels == (int(np.argmax(sizes)) + 1)
    return masks


def cell_masks(masks: np.ndarray, h: int, w: int) -> np.ndarray:
    """Fine masks -> (N, h, w) feature-map cells at least half covered (at least one cell)."""
    n = len(masks)
    cover = masks.reshape(n, h, masks.shape[1] // h, w, masks.shape[2] // w).mean(axis=(2, 4))
    cells = cover >= 0.5
    for i in range(n):
        if not cells[i].any():
            cells[i] = cover[i] == cover[i].max()
    return cells


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
