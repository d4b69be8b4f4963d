"""Read PyTorch checkpoints (``.pth`` state dicts) into NumPy arrays, without torch.

torch is a 1 GB dependency (several GB with the CUDA wheels pip picks by default), and all
lookalike needs from a checkpoint is its named arrays. PyTorch's two on-disk formats are
plain pickles plus raw little-endian buffers, so they are read here by hand:

* the legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``, the default
  before torch 1.6): magic number, protocol version and system info, each pickled; then the
  object pickle, whose storages are persistent ids; then the pickled list of storage keys;
  then, per key in that order, an int64 element count and the raw bytes.
* the zip format (torch >= 1.6): ``<archive>/data.pkl`` plus one ``<archive>/data/<key>``
  file per storage.

Unpickling is restricted to an allow-list (ordered dicts and tensor rebuilds), like
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype[Any]


@dataclass
class _StorageRef:
    key: str
    dtype: np.dtype[Any]
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        if self.storage.data is None:
            raise CheckpointError(f"storage {self.storage.key} has no data")
        data = self.storage.data
        itemsize = data.dtype.itemsize
        if self.shape and self.offset + _max_index(self.shape, self.stride) >= data.size:
            raise CheckpointError(f"tensor overruns storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)  # owns its memory; keeps 0-d tensors 0-d


def _max_index(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    return sum((n - 1) * s for n, s in zip(shape, stride, strict=True) if n > 0)


def _rebuild_tensor(
    storage: _StorageRef,
    offset: int,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    *_unused: Any,
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(tensor: _TensorRef, *_unused: Any) -> _TensorRef:
    return tensor


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise CheckpointError(f"checkpoint refers to {module}.{name}, which is not allowed")

    def persistent_load(self, pid: Any) -> _StorageRef:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unsupported storage type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _StorageRef(key, storage_type.dtype)
        return self.storages[key]


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the checkpoint's tensors by name, as contiguous NumPy arrays."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with path.open("rb") as file:
        return _load_legacy(file)


def _load_legacy(file: IO[bytes]) -> dict[str, np.ndarray]:
    try:
        magic = pickle.load(file)
        protocol = pickle.load(file)
        pickle.load(file)  # system info: byte order and type sizes; this reader assumes LE
    except Exception as exc:
        raise CheckpointError(f"not a torch checkpoint: {exc}") from exc
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise CheckpointError("not a legacy-format torch checkpoint")
    unpickler = _RestrictedUnpickler(file)
    obj = unpickler.load()
    keys = pickle.load(file)
    for key in keys:
        ref = unpickler.storages.get(str(key))
        count = int(np.frombuffer(_read_exact(file, 8), dtype="<i8")[0])
        if ref is None:
            raise CheckpointError(f"storage {key} is not referenced")
        raw = _read_exact(file, count * ref.dtype.itemsize)
        ref.data = np.frombuffer(raw, dtype=ref.dtype)
    return _as_state_dict(obj)


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError("zip checkpoint without exactly one data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])))
        obj = unpickler.load()
        for key, ref in unpickler.storages.items():
            ref.data = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=ref.dtype)
    return _as_state_dict(obj)


def _read_exact(file: IO[bytes], size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise CheckpointError("checkpoint is truncated")
    return data


def _as_state_dict(obj: Any) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    return {
        str(name): value.materialize()
        for name, value in obj.items()
        if isinstance(value, _TensorRef)
    }
