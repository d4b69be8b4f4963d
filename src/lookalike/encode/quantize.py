"""int8 models: ONNX Runtime's static quantization of an fp32 graph, calibrated on real images.

Weights are quantized per output channel (int8, symmetric) and activations per tensor
(uint8) from the ranges the graph's tensors reach on a calibration set, in QDQ format:
QuantizeLinear/DequantizeLinear pairs around each operator, which ONNX Runtime fuses into
integer kernels (VNNI on recent x86 cores). Dynamic quantization (ConvInteger) is not used:
it ran 3-16x *slower* than fp32 on a 2-core EPYC.

Built-in models are calibrated on the images that ship with lookalike
(:data:`BUILTIN_CALIBRATION`, CC BY 4.0, see its README.md); a user's own ONNX model on a
folder the user names. The result is cached beside the fp32 graph, under a key that covers
the fp32 graph, the calibration files and the ONNX Runtime version, and is built
deterministically: the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike import config

if TYPE_CHECKING:
    from lookalike.encode.models import ModelSpec

log = logging.getLogger(__name__)

#: Bump when the quantization recipe changes, so cached int8 graphs are rebuilt.
QUANTIZATION_VERSION = 2
#: What is quantized in the built-in EfficientNet-Lite graphs: the convolutions, their ReLU6
#: and the residual additions, which is all of the work. Left in float: the global average
#: pool, so that the ``embedding`` output is the exact mean of the (dequantized) feature map,
#: as the other descriptors compute it, rather than that mean rounded again to 8 bits, and
#: the small ImageNet head. (Same speed; vectors no further from fp32.)
LITE_OP_TYPES = ("Conv", "Clip", "Add")
#: Images per calibration batch (the ranges do not depend on it; memory does).
CALIBRATION_BATCH = 8
#: The images built-in models are calibrated on: the bundled sample collection and query.
BUILTIN_CALIBRATION = importlib.resources.files("lookalike") / "sample"


class QuantizationError(RuntimeError):
    """A model cannot be quantized (no calibration images, a graph ONNX Runtime refuses)."""


def calibration_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files below ``folder``, in a fixed order (the order feeds the ranges)."""
    from lookalike.image.files import walk_images

    root = Path(os.fspath(folder))
    if not root.is_dir():
        raise QuantizationError(f"calibration folder {root} does not exist")
    files = sorted(Path(c.path) for c in walk_images(root))
    if not files:
        raise QuantizationError(f"no image files in calibration folder {root}")
    return files


def _calibration_batches(spec: ModelSpec, files: Sequence[Path]) -> Iterator[np.ndarray]:
    """Model inputs of the calibration images, prepared exactly as for indexing.

    Every input side the descriptor uses (``spec.all_scales``) is calibrated, so that
    multi-scale descriptors see no range they were not calibrated for.
    """
    from lookalike.image.decode import DecodeError, load_image
    from lookalike.image.preprocess import normalize_batch, to_pixels

    images = []
    for path in files:
        try:
            images.append(load_image(path, min_side=max(spec.all_scales)))
        except DecodeError as exc:
            log.warning("calibration: skipping %s: %s", path, exc.reason)
    if not images:
        raise QuantizationError("none of the calibration files could be decoded")
    for size in spec.all_scales:
        for start in range(0, len(images), CALIBRATION_BATCH):
            pixels = np.stack(
                [to_pixels(i, size, spec.resize) for i in images[start : start + CALIBRATION_BATCH]]
            )
            yield normalize_batch(pixels, spec.mean, spec.std)


def quantize_model(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    spec: ModelSpec,
    files: Sequence[Path],
    op_types: Sequence[str] | None = None,
) -> None:
    """Write the int8 (QDQ, per-channel) version of the graph at ``fp32_path``.

    ``op_types``: the operators to quantize (None: every kind ONNX Runtime can)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load(os.fspath(fp32_path), load_external_data=False).graph.input[0].name
    batches = _calibration_batches(spec, files)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            return None if batch is None else {input_name: batch}

    try:
        with tempfile.TemporaryDirectory() as tmp:
            # ONNX Runtime's recommended first step: shape inference and graph optimizations
            # (folding, fusions) so that the quantizer sees the graph ONNX Runtime will run.
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(os.fspath(fp32_path), prepared, skip_symbolic_shape=True)
            quantize_static(
                prepared,
                os.fspath(out_path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=list(op_types) if op_types else None,
            )
    except Exception as exc:
        raise QuantizationError(f"cannot quantize {fp32_path}: {exc}") from exc


def int8_graph_path(
    spec: ModelSpec,
    fp32_path: Path,
    calibration: Path | None = None,
    op_types: Sequence[str] | None = None,
) -> Path:
    """Path of the int8 graph of ``fp32_path``, quantizing it into the cache if needed.

    ``calibration``: the folder of calibration images (default: the bundled ones);
    ``op_types`` as for :func:`quantize_model`.
    """
    import onnxruntime

    folder = calibration or Path(str(BUILTIN_CALIBRATION))
    files = calibration_files(folder)
    key = hashlib.sha256()
    for part in (
        str(QUANTIZATION_VERSION),
        onnxruntime.__version__,
        _file_key(fp32_path),
        repr((spec.input_size, spec.mean, spec.std, spec.resize, spec.all_scales, op_types)),
        *(_file_key(f, relative_to=folder) for f in files),
    ):
        key.update(part.encode() + b"\0")
    target = config.cache_dir() / "models" / f"{fp32_path.stem}-int8-{key.hexdigest()[:16]}.onnx"
    if target.is_file():
        return target
    log.info("quantizing %s to int8 on %d images from %s (once)", spec.name, len(files), folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Quantize into a temporary file and rename: a concurrent or killed build never leaves a
    # half-written graph under the final name.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        quantize_model(fp32_path, tmp, spec, files, op_types)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _file_key(path: Path, relative_to: Path | None = None) -> str:
    """Name, size and modification time: enough to notice a changed file without reading it."""
    stat = path.stat()
    name = str(path.relative_to(relative_to)) if relative_to else str(path.resolve())
    return f"{name}:{stat.st_size}:{stat.st_mtime_ns}"
