"""Decoded image -> model input: resize, crop to a square, normalise, channels first."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

ResizeMode = Literal["crop", "squash"]


def crop_region(
    width: int, height: int, size: int, mode: ResizeMode = "crop"
) -> tuple[float, float, float, float]:
    """The part of a width x height image that :func:`fit_square` keeps, as fractions."""
    if mode == "squash":
        return (0.0, 0.0, 1.0, 1.0)
    left, top, right, bottom = _crop_box(width, height, size)
    return (left / width, top / height, right / width, bottom / height)


def _crop_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return (left / scale, top / scale, (left + size) / scale, (top + size) / scale)


def shrink(image: Image.Image, min_side: int) -> Image.Image:
    """Reduce a large decoded image by an integer factor (box filter), keeping its shorter
    side >= 2 * ``min_side``.

    The same step that :func:`fit_square`'s ``reducing_gap`` takes later, done as soon as
    the image is decoded, so that an indexing batch holds small images, not eight decoded
    photos of 12-48 MP each: memory stays near one decoded photo per worker. (JPEGs get
    there more cheaply still: the decoder's draft mode decodes them at 1/2 to 1/8 scale.)
    """
    factor = min(image.size) // (2 * min_side)
    return image.reduce(factor) if factor > 1 else image


def fit_square(image: Image.Image, size: int, mode: ResizeMode = "crop") -> Image.Image:
    """Resize to ``size`` x ``size``.

    ``crop`` scales the shorter side to ``size`` and keeps the centre (no distortion, loses
    the margins of elongated images); ``squash`` scales each side independently.
    """
    if mode == "squash":
        return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    # box= crops in source coordinates while resizing, so only the kept part is resampled.
    box = _crop_box(image.width, image.height, size)
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)


def to_pixels(image: Image.Image, size: int, mode: ResizeMode = "crop") -> np.ndarray:
    """RGB image -> uint8 array (size, size, 3), ready to be stacked into a batch."""
    return np.asarray(fit_square(image, size, mode), dtype=np.uint8)


def normalize_batch(
    pixels: np.ndarray, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """uint8 (N, S, S, 3) -> float32 (N, 3, S, S), as (x/255 - mean) / std.

    Done once per batch rather than per image: one vectorised pass, and a uint8 image is a
    quarter of the memory while it waits in the decoding queue.
    """
    std_arr = np.asarray(std, dtype=np.float32)
    scale = np.float32(1 / 255) / std_arr
    offset = np.asarray(mean, dtype=np.float32) / std_arr
    out = np.empty((pixels.shape[0], 3, *pixels.shape[1:3]), dtype=np.float32)
    for channel in range(3):
        np.multiply(pixels[..., channel], scale[channel], out=out[:, channel], casting="unsafe")
        out[:, channel] -= offset[channel]
    return out
