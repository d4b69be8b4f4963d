"""Query localization that leaves clean photos alone: crop only when the evidence is clear.

A photo of a picture on a wall, or of an object on a plain table, has a background that
fills the photo's border and differs from the object. The background's colour is taken from
the image border; the pixels that differ from it form regions, and the largest connected
one is the object. The photo is cropped to it only when the evidence is clear:

* the border is plain (most border pixels lie close to the background colour): a cluttered
  scene or an object that fills the frame and runs off its edges has no such border;
* the region is not tiny (a speck of dirt) and its box covers at most ``MAX_COVER`` of the
  image: a clean, object-filling photo is left exactly as it is.

The search is then repeated inside the box once (a framed picture: wall -> frame -> the
picture inside the frame) while the same evidence holds. Written by hand (NumPy and SciPy's
connected components) because no maintained library offers this small, fast test; it runs
on a copy of at most ``WORK_SIDE`` pixels a side, about a millisecond.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]

#: The image is analysed at this longer side.
WORK_SIDE = 160
#: Width of the border band that models the background, as a fraction of the shorter side.
BORDER = 0.04
#: A border is plain when this share of its pixels lies within the colour tolerance.
PLAIN_SHARE = 0.7
#: Colour distance (0..255 RGB, Euclidean) from the background beyond which a pixel differs,
#: at least; widened to the border's own spread (its 90th percentile, times 2) when larger.
MIN_DISTANCE = 28.0
#: No crop when the object's box covers more than this share of the image.
MAX_COVER = 0.9
#: ...or less than this (a speck, not an object).
MIN_COVER = 0.02
#: How many nested boxes to follow (wall -> frame -> picture).
MAX_DEPTH = 3


def find_object(image: Image.Image) -> Box | None:
    """The object's box as fractions (x0, y0, x1, y1) of the image, or None: leave it whole."""
    small = image if image.mode == "RGB" else image.convert("RGB")
    scale = WORK_SIDE / max(small.size)
    if scale < 1:
        small = small.resize(
            (max(8, round(small.width * scale)), max(8, round(small.height * scale))),
            Image.Resampling.BILINEAR,
            reducing_gap=2.0,
        )
    pixels = np.asarray(small, dtype=np.float32)
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = 0, 0, w, h
    found = False
    for _ in range(MAX_DEPTH):
        # one pixel in from the last box: its edge pixels blend in what lies outside
        inset = 1 if found else 0
        inner = _inner_box(pixels[y0 + inset : y1 - inset, x0 + inset : x1 - inset])
        if inner is None:
            break
        bx0, by0, bx1, by1 = inner
        x0, y0 = x0 + inset + bx0, y0 + inset + by0
        x1, y1 = x0 + (bx1 - bx0), y0 + (by1 - by0)
        found = True
    if not found:
        return None
    return (x0 / w, y0 / h, x1 / w, y1 / h)


@functools.lru_cache(maxsize=64)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an h x w image: which pixels form the border band (flat mask), the plane's design
    matrix (1, x / w, y / h) of every pixel, and its border rows. The same few sizes come
    back query after query (the analysed copy is ``WORK_SIDE`` long), so they are kept."""
    band = max(2, round(BORDER * min(h, w)))
    in_border = np.zeros((h, w), dtype=bool)
    in_border[:band], in_border[-band:], in_border[:, :band], in_border[:, -band:] = (True,) * 4
    ys, xs = np.mgrid[0:h, 0:w]
    design = np.stack([np.ones(h * w), xs.ravel() / w, ys.ravel() / h], axis=1)
    flat = in_border.ravel()
    rows = design[flat]
    for array in (flat, design, rows):
        array.setflags(write=False)
    return flat, design, rows


def _background_plane(rows: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The background colour as a plane per channel (colour = a + b x + c y, coefficients
    3 x 3) fitted to the border pixels by least squares (a lit wall is brighter on one side),
    then refitted to the half of them that the first fit explains best (pieces of the
    object, or of what lies outside a frame, touching the border are left out)."""
    coef = np.linalg.lstsq(rows, colours, rcond=None)[0]
    residual = np.linalg.norm(colours - rows @ coef, axis=1)
    keep = residual <= np.percentile(residual, 50)
    return np.linalg.lstsq(rows[keep], colours[keep], rcond=None)[0]


def _inner_box(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """Box (pixels, end exclusive) of the largest region that differs from a plain border."""
    from scipy import ndimage  # imported here: scipy adds 0.2 s to every CLI start

    h, w = pixels.shape[:2]
    if min(h, w) < 16:
        return None
    in_border, design, rows = _grid(h, w)
    flat = pixels.reshape(-1, 3)
    colours = flat[in_border]
    coef = _background_plane(rows, colours)
    # The border alone first: most photos have no plain border and stop here.
    border_distance = np.linalg.norm(colours - (rows @ coef).astype(np.float32), axis=1)
    if float(np.mean(border_distance <= MIN_DISTANCE)) < PLAIN_SHARE:
        return None  # a busy or object-filled border: no background to model
    background = (design @ coef).astype(np.float32)
    distance = np.linalg.norm(flat - background, axis=1).reshape(h, w)
    tolerance = max(MIN_DISTANCE, 2.0 * float(np.percentile(border_distance, 90)))
    differs = distance > tolerance
    differs = ndimage.binary_opening(differs, iterations=1)
    labels, count = ndimage.label(differs)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(differs, labels, index=np.arange(1, count + 1))
    region = labels == int(np.argmax(sizes)) + 1
    rows_, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    y0, y1, x0, x1 = int(rows_[0]), int(rows_[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    cover = (x1 - x0) * (y1 - y0) / (w * h)
    if cover > MAX_COVER or cover < MIN_COVER:
        return None
    return (x0, y0, x1, y1)


#: Margin kept around a found box before cropping (fraction of the box side).
CROP_MARGIN = 0.02


def crop_to(image: Image.Image, box: Box, margin: float = CROP_MARGIN) -> Image.Image:
    """The image cut to ``box`` (fractions) plus ``margin`` of the box's sides; the whole
    image when that would leave under 8 pixels either way."""
    pixels = crop_pixels(image.size, box, margin)
    return image if pixels is None else image.crop(pixels)


def crop_pixels(
    size: tuple[int, int], box: Box, margin: float = CROP_MARGIN
) -> tuple[int, int, int, int] | None:
    """The pixel box :func:`crop_to` cuts from an image of ``size``; None: it keeps it whole."""
    width, height = size
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    left, top = max(0.0, x0 - mx) * width, max(0.0, y0 - my) * height
    right, bottom = min(1.0, x1 + mx) * width, min(1.0, y1 + my) * height
    if right - left < 8 or bottom - top < 8:
        return None
    return (round(left), round(top), round(right), round(bottom))


def fuse(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two searches of one query (the whole photo and the object cut from it) merged:
    (ids, scores) rows of each, every id at its better score, top ``k``, padded with
    id -1 and score -inf. The whole photo's own matches keep their scores, so a clean photo
    is never pushed down by its crop."""
    ids = np.full((len(first[0]), k), -1, dtype=np.int64)
    scores = np.full((len(first[0]), k), -np.inf, dtype=np.float32)
    for row in range(len(ids)):
        best: dict[int, float] = {}
        for found_ids, found_scores in (first, second):
            for i, s in zip(found_ids[row].tolist(), found_scores[row].tolist(), strict=True):
                if i >= 0 and s > best.get(i, -np.inf):
                    best[i] = s
        top = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
        for j, (i, s) in enumerate(top):
            ids[row, j], scores[row, j] = i, s
    return ids, scores
