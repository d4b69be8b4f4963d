"""Searching a region of a query photo: the box a person drags on it (as Google Lens does).

A box is ``x0,y0,x1,y1`` as fractions of the image's width and height (0..1), the same
convention as the boxes localization returns, so that a box shown on the page can be sent
back as it is.
"""

from __future__ import annotations

from PIL import Image

from lookalike.types import Box

#: A region smaller than this fraction of a side is a slip of the mouse, not a selection.
MIN_SIDE = 0.02


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` -> a box; ValueError saying what is wrong otherwise."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"box must be four numbers x0,y0,x1,y1, got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"box must be four numbers x0,y0,x1,y1, got {text!r}")
    x0, y0, x1, y1 = values
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(f"box must have 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {text!r}")
    if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
        raise ValueError(f"box is too small: {text!r} (each side at least {MIN_SIDE})")
    return (x0, y0, x1, y1)


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The part of ``image`` inside ``box`` (at least one pixel each way)."""
    width, height = image.size
    x0, y0, x1, y1 = box
    left, top = int(x0 * width), int(y0 * height)
    right = max(left + 1, round(x1 * width))
    bottom = max(top + 1, round(y1 * height))
    return image.crop((left, top, right, bottom))
