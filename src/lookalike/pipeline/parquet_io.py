"""Vectors in and out as Parquet files: ``lookalike embed --out`` and ``lookalike import``.

A file holds one row per image: ``path`` (string) and ``vector`` (list of float32), plus, when
lookalike wrote it, the file's ``size``, ``mtime_ns``, ``width`` and ``height`` (so that a later
``lookalike index`` of the same folder sees the files as unchanged). The model that made the
vectors is recorded in the Parquet schema metadata (``lookalike.model``, the JSON of
:class:`lookalike.encode.models.ModelSpec`); importing into a collection of another model is
refused.
This is how embeddings computed on other machines come in, and how benchmarks build
collections of millions without images.

Importing is resumable: each file's progress (Parquet record batches committed) is kept in the
collection, so an interrupted import goes on where it stopped, and importing the same file
again does nothing. pyarrow is an optional dependency (``pip install 'lookalike[parquet]'``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lookalike import config
from lookalike.encode.encoders import load_encoder
from lookalike.encode.models import Embedder, ModelSpec
from lookalike.image.files import candidates_for, existing_paths
from lookalike.pipeline import indexer
from lookalike.pipeline.indexer import IndexReport
from lookalike.store.records import EmbeddedImage, SkippedFile

if TYPE_CHECKING:
    from lookalike.collection import Collection

log = logging.getLogger(__name__)

MODEL_KEY = b"lookalike.model"
#: Rows per Parquet row group when writing, and per store transaction when importing.
ROWS_PER_BATCH = 10_000


def _pyarrow() -> Any:
    from lookalike import extras

    extras.require("parquet", "reading and writing Parquet files of vectors")
    import pyarrow
    import pyarrow.parquet

    return pyarrow


def schema(spec: ModelSpec) -> Any:
    pa = _pyarrow()
    return pa.schema(
        [
            ("path", pa.string()),
            ("vector", pa.list_(pa.float32())),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
        ],
        metadata={MODEL_KEY: spec.to_json().encode()},
    )


class ParquetSink:
    """Receives :func:`lookalike.pipeline.indexer.run`'s batches and appends them to a Parquet
    file."""

    def __init__(self, path: Path, spec: ModelSpec) -> None:
        pa = _pyarrow()
        self._pa = pa
        self.schema = schema(spec)
        self._writer = pa.parquet.ParquetWriter(str(path), self.schema)
        self._pending: list[EmbeddedImage] = []
        self.rows = 0

    def write_batch(
        self,
        embedded: Iterable[EmbeddedImage],
        skipped: Iterable[SkippedFile],
        forget: Iterable[str] = (),
    ) -> None:
        self._pending.extend(embedded)
        if len(self._pending) >= ROWS_PER_BATCH:
            self._flush()

    def remove(self, paths: Iterable[str]) -> int:
        return 0  # nothing to remove from a new file

    def _flush(self) -> None:
        if not self._pending:
            return
        pa, rows = self._pa, self._pending
        vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows])
        flat = pa.array(vectors.ravel(), type=pa.float32())
        offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
        table = pa.table(
            {
                "path": pa.array([r.path for r in rows], type=pa.string()),
                "vector": pa.ListArray.from_arrays(offsets, flat),
                "size": pa.array([r.size for r in rows], type=pa.int64()),
                "mtime_ns": pa.array([r.mtime_ns for r in rows], type=pa.int64()),
                "width": pa.array([r.width for r in rows], type=pa.int32()),
                "height": pa.array([r.height for r in rows], type=pa.int32()),
            },
            schema=self.schema,
        )
        self._writer.write_table(table)
        self.rows += len(rows)
        self._pending = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def embed(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    all_files: bool = False,
    batch_size: int = config.BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> IndexReport:
    """Embed the images below ``paths`` into a new Parquet file ``out`` (no collection).

    The file appears only when complete (written as ``out.partial``, then renamed)."""
    out = Path(out)
    candidates, _ = candidates_for(existing_paths(paths), all_files=all_files)
    unique = list({c.path: c for c in candidates}.values())
    if on_plan is not None:
        on_plan(len(unique))
    work = indexer.Plan(unique, frozenset(c.path for c in unique), [], 0)
    partial = out.with_name(out.name + ".partial")
    sink = ParquetSink(partial, spec)
    try:
        report = indexer.run(
            sink,
            cast(Embedder, load_encoder(spec, threads=1)),
            work,
            batch_size=batch_size,
            progress=progress,
        )
        sink.close()
    except BaseException:
        sink.close()
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return report


def read_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """The model recorded in a Parquet file of vectors."""
    pa = _pyarrow()
    try:
        metadata = pa.parquet.read_schema(str(path)).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    if MODEL_KEY not in metadata:
        raise ValueError(f"{path}: no lookalike.model in its schema metadata")
    return ModelSpec.from_json(metadata[MODEL_KEY].decode())


@dataclass
class ImportReport:
    files: int = 0
    rows: int = 0
    already_imported: int = 0  # rows skipped because an earlier run committed them
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "rows": self.rows,
            "already_imported": self.already_imported,
            "rejected": [{"path": p, "reason": r} for p, r in self.rejected],
        }


def import_files(
    collection: Collection,
    files: Sequence[str | os.PathLike[str]],
    *,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Add the rows of Parquet files to ``collection``; refuses a file made by another model.

    Rows with an empty path, a vector of the wrong length or non-finite numbers are rejected
    and reported; vectors are scaled to unit length. Each record batch is one transaction,
    and the file's progress is recorded after it, so an interrupted import resumes.
    """
    report = ImportReport()
    for file in files:  # every file checked before any row is written
        _check_file(collection, file)
    writes = collection.writes
    with writes.batches():  # settled at the end: models refitted, the index followed and saved
        for file in files:
            _import_file(collection, file, report, progress)
    return report


def _import_file(
    collection: Collection,
    file: str | os.PathLike[str],
    report: ImportReport,
    progress: Callable[[int], None] | None,
) -> None:
    writes = collection.writes
    parquet = _open_streaming(file)
    key = "import:" + _file_key(Path(file))
    done = int(collection.store.get_meta(key) or 0)
    dims = None
    batches = parquet.iter_batches(batch_size=ROWS_PER_BATCH, use_threads=False)
    for number, batch in enumerate(batches):
        if number < done:
            report.already_imported += batch.num_rows
            continue
        rows, dims = _rows(batch, dims, str(file), report)

        def write(rows: list[EmbeddedImage] = rows, done: int = number + 1, key: str = key) -> None:
            writes.write_batch(rows, [])  # on the writer already: the rows and the progress
            collection.store.set_meta(key, str(done))  # recorded in one change

        writes.change(write)
        report.rows += len(rows)
        if progress is not None:
            progress(batch.num_rows)
    report.files += 1


def _check_file(collection: Collection, file: str | os.PathLike[str]) -> None:
    """Refuse (ValueError) a file of another model, or whose columns cannot be read."""
    spec = read_spec(file)
    if _comparable(spec) != _comparable(collection.spec):
        raise ValueError(
            f"{file} holds vectors of {spec.name} ({spec.pooling} pooling, localize "
            f"{spec.localize}); {collection.name} is {collection.spec.name} "
            f"({collection.spec.pooling}, localize {collection.spec.localize})"
        )
    check_columns(_open_streaming(file).schema_arrow, str(file))


def _comparable(spec: ModelSpec) -> ModelSpec:
    """The spec but for its descriptor version (which Collection.open already warns about):
    vectors of two specs equal under this can be compared."""
    return dataclasses.replace(spec, descriptor_version=0)


def check_columns(schema: Any, file: str) -> None:
    """Refuse (ValueError, one line) a file whose ``path`` and ``vector`` columns lookalike
    cannot read: the vector must be a list, large list or fixed-size list of floats
    (float32, the usual; float16 and float64 are converted)."""
    pa = _pyarrow()
    names = schema.names
    if "path" not in names or "vector" not in names:
        raise ValueError(f"{file}: needs a path column and a vector column")
    kind = schema.field("vector").type
    is_list = (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )
    if not is_list or not pa.types.is_floating(kind.value_type):
        raise ValueError(
            f"{file}: the vector column is {kind}; expected a list, large_list or "
            "fixed_size_list of float32 (or float16)"
        )


def _vector_values(column: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start of each row in ``values``, length of each row (0 if null), ``values`` as
    float32) of a list, large list or fixed-size list column; offsets into the child
    values (null slots included), not flatten(): robust to slices."""
    pa = _pyarrow()
    lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(column.type):
        # No offsets: row i starts at (slice offset + i) x list size of the child values.
        rows = np.arange(len(column) + 1, dtype=np.int64) + column.offset
        starts = rows * column.type.list_size
    else:
        starts = column.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return starts, lengths, values


def _rows(
    batch: Any, dims: int | None, file: str, report: ImportReport
) -> tuple[list[EmbeddedImage], int | None]:
    pa = _pyarrow()
    names = batch.schema.names
    check_columns(batch.schema, file)
    column = batch.column("vector")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    paths = batch.column("path").to_pylist()
    optional = {
        name: batch.column(name).to_numpy(zero_copy_only=False) if name in names else None
        for name in ("size", "mtime_ns", "width", "height")
    }
    starts, lengths, values = _vector_values(column)
    rows: list[EmbeddedImage] = []
    for i, path in enumerate(paths):
        length = lengths[i]
        if not path:
            report.rejected.append((f"{file}#{i}", "empty path"))
            continue
        if dims is None and length:  # the first vector sets the length
            dims = int(length)
        if not length or length != dims:
            report.rejected.append((path, f"vector of length {length}, expected {dims}"))
            continue
        vector = values[starts[i] : starts[i + 1]]
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(vector).all() or norm == 0:
            report.rejected.append((path, "vector with non-finite or all-zero values"))
            continue

        def field_of(name: str, default: int, row: int = i) -> int:
            column = optional[name]
            return default if column is None else int(column[row])

        rows.append(
            EmbeddedImage(
                str(path),
                field_of("size", -1),
                field_of("mtime_ns", -1),
                field_of("width", 0),
                field_of("height", 0),
                vector / norm,
            )
        )
    return rows, dims


def _open_streaming(path: str | os.PathLike[str]) -> Any:
    """A Parquet file read a buffer at a time. Arrow's default (``pre_buffer``) reads ahead
    of a slow consumer: a million-row import, whose SQLite writes are slower than reading,
    held most of the 4.9 GB file in memory (6.1 GB peak); streamed, the import stays near
    one record batch (measured in BENCHMARKS.md)."""
    return _pyarrow().parquet.ParquetFile(str(path), pre_buffer=False, buffer_size=1 << 22)


def _file_key(path: Path) -> str:
    """Identifies a file's contents cheaply: its absolute path, size and mtime."""
    stat = path.stat()
    text = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def iter_vectors(path: str | os.PathLike[str]) -> Iterator[tuple[list[str], np.ndarray]]:
    """(paths, vectors) record batch by record batch (for benchmarks and tools)."""
    parquet = _open_streaming(path)
    for batch in parquet.iter_batches(batch_size=ROWS_PER_BATCH, use_threads=False):
        column = batch.column("vector")
        dims = column.value_lengths()[0].as_py() if batch.num_rows else 0
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        yield batch.column("path").to_pylist(), values.reshape(batch.num_rows, dims)
