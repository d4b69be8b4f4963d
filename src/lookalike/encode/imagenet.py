"""Naming what an image shows with the model's ImageNet head (1000 classes), for collections
without labelled categories of their own (``lookalike classify``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.encode.base import ImageEncoder
from lookalike.errors import InvalidInput

Head = Callable[[list[Image.Image]], np.ndarray]


def head_of(encoder: ImageEncoder, model: str) -> Head:
    """The encoder's ImageNet head (images -> class probabilities), or
    :class:`~lookalike.errors.InvalidInput` if the model ``model`` has none."""
    head: Head | None = getattr(encoder, "imagenet_probabilities", None)
    if head is None:
        raise InvalidInput(f"{model} has no ImageNet head to classify with")
    return head


def top_classes(
    probabilities: np.ndarray, names: Sequence[str], top: int
) -> list[tuple[str, float]]:
    """The ``top`` most likely classes, most likely first, with their probabilities."""
    order = np.argsort(-probabilities)[:top]
    return [(names[i], float(probabilities[i])) for i in order]


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in model output order (WordNet lemmas; list from
    timm, Apache-2.0)."""
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text()
    return tuple(line.split("\t", 1)[1] for line in text.splitlines() if line.strip())
