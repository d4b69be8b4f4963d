"""Naming what an image shows with the model's ImageNet head (1000 classes), for collections
without labelled categories of their own (``lookalike classify``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.encode.base import ImageEncoder
from lookalike.encode.models import ModelSpec
from lookalike.errors import InvalidInput, ModelError

Head = Callable[[list[Image.Image]], np.ndarray]


def head_of(encoder: ImageEncoder, model: str) -> Head:
    """The encoder's ImageNet head (images -> class probabilities), or
    :class:`~lookalike.errors.InvalidInput` if the model ``model`` has none."""

    def head(images: list[Image.Image]) -> np.ndarray:
        try:
            return encoder.imagenet_probabilities(images)
        except ModelError as exc:
            raise InvalidInput(f"{model} has no ImageNet head to classify with") from exc

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


def head_weights(spec: ModelSpec) -> np.ndarray | None:
    """(1000, D) rows ``w_c`` of the built-in model's ImageNet head, one per class, in the
    space of the model's vectors: the logit of class ``c`` is ``w_c . f + b_c`` on the
    average-pooled features ``f`` (search by words scores stored vectors with these rows;
    docs/EVALUATION.md, "Search by words"). A composite model's rows are its parts' unit rows
    side by side, as its vectors are. None for a model without a head (a user's ONNX model)."""
    if spec.onnx_path is not None:
        return None
    return _head_of(tuple(part.name for part in spec.parts) or (spec.name,))


@functools.cache
def _head_of(names: tuple[str, ...]) -> np.ndarray:
    if len(names) == 1:
        return _fc_weight(names[0])
    return np.concatenate([_unit_rows(_fc_weight(name)) for name in names], axis=1)


def _fc_weight(name: str) -> np.ndarray:
    from lookalike.encode.checkpoint import load_state_dict
    from lookalike.encode.models import _checkpoint_path

    weight = load_state_dict(_checkpoint_path(name))["_fc.weight"]
    return np.asarray(weight, dtype=np.float32)


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
