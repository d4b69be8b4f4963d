"""Vectors in and out as Parquet files: ``lookalike embed --out`` and ``lookalike import``.

A file holds one row per image: ``path`` (string) and ``vector`` (list of float32), plus, when
lookalike wrote it, the file's ``size``, ``mtime_ns``, ``width`` and ``height`` (so that a later
``lookalike index`` of the same folder sees the files as unchanged). The model that made the
vectors is recorded in the Parquet schema metadata (``lookalike.model``, the JSON of
:class:`lookalike.encode.models.ModelSpec`); importing into a collection of another model is
refused.
This is how embeddings computed on other machines come in, and how benchmarks build
collections of millions without images.

``lookalike import`` takes files, folders of them and patterns, and streams them: a record
batch is read and checked while the one before is written (:meth:`WritePath.stream
<lookalike.pipeline.write_path.WritePath.stream>`), so memory stays at a few batches whatever
the files' number and size. Importing is resumable: each file's progress (the rows committed)
is kept in the collection with them, so an interrupted import goes on where it stopped without
reading the row groups already in, and importing the same file again does nothing. A file
that cannot be read is reported and skipped. pyarrow is an optional dependency (``pip install
'lookalike[parquet]'``).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import logging
import os
from collections import Counter
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


def common_spec(files: Sequence[str | os.PathLike[str]]) -> ModelSpec:
    """The model most of these files record (the first one's on a tie): the model of a new
    collection made for them (a stray file of another model is then the one skipped). The
    first file's error if none records one."""
    specs: list[ModelSpec] = []
    errors: list[ValueError] = []
    for file in files:
        try:
            specs.append(read_spec(file))
        except ValueError as exc:
            errors.append(exc)
    if not specs:
        raise errors[0] if errors else ValueError("no Parquet file to import")
    counts = Counter(_comparable(spec) for spec in specs)
    return max(specs, key=lambda spec: counts[_comparable(spec)])


@dataclass
class ImportReport:
    files: int = 0
    rows: int = 0
    already_imported: int = 0  # rows skipped because an earlier run committed them
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    #: (file, reason) of files skipped whole or from the first row that could not be read
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "rows": self.rows,
            "already_imported": self.already_imported,
            "rejected": [{"path": p, "reason": r} for p, r in self.rejected],
            "failed": [{"file": f, "reason": r} for f, r in self.failed],
        }


def parquet_files(sources: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The Parquet files that ``sources`` name, in order, each once: a file as it is, a folder
    as the ``*.parquet`` files below it (sorted), a pattern with ``*``, ``?`` or ``[`` as the
    files it matches (sorted; ``**`` reaches into sub-folders). Raises FileNotFoundError for a
    source that names nothing."""
    found: dict[Path, None] = {}
    for source in sources:
        text = os.fspath(source)
        if Path(text).is_dir():
            matches = sorted(p for p in Path(text).rglob("*.parquet") if p.is_file())
        elif any(mark in text for mark in "*?[") and not Path(text).exists():
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        else:
            matches = [Path(text)] if Path(text).is_file() else []
        if not matches:
            raise FileNotFoundError(f"{text}: no Parquet file there")
        found.update(dict.fromkeys(matches))
    return list(found)


def import_files(
    collection: Collection,
    files: Sequence[str | os.PathLike[str]],
    *,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Add the rows of Parquet files (or of the folders and patterns in ``files``, see
    :func:`parquet_files`) to ``collection``, streamed a record batch at a time.

    Every file is checked first (its model, its columns): a file of another model or that
    cannot be read is reported in ``failed`` and skipped, the others imported; if no file can
    be imported, ValueError and nothing is written. A file that fails midway (a damaged page)
    keeps the rows committed before and is reported; the next files go on. Rows with an empty
    path, a vector of the wrong length or non-finite numbers are rejected and reported;
    vectors are scaled to unit length. Each record batch is one transaction that records the
    file's progress too, so an interrupted import resumes where it stopped (without reading
    the row groups already in) and importing the same file again writes nothing.
    """
    report = ImportReport()
    good: list[Path] = []
    for file in parquet_files(files):  # every file checked before any row is written
        try:
            _check_file(collection, file)
        except ValueError as exc:
            report.failed.append((str(file), str(exc)))
            continue
        good.append(file)
    if not good:
        raise ValueError("; ".join(reason for _, reason in report.failed))
    writes = collection.writes
    rows = sum(_open_streaming(file).metadata.num_rows for file in good)
    with writes.batches(rows=rows):  # settled at the end: models refitted, the index followed
        for file in good:
            _import_file(collection, file, report, progress)
    return report


def _import_file(
    collection: Collection,
    file: Path,
    report: ImportReport,
    progress: Callable[[int], None] | None,
) -> None:
    """Stream one file's rows into the collection (reading and converting a batch while the
    one before is written); a file that cannot be read to its end is reported in
    ``report.failed`` with the rows before kept."""
    pa = _pyarrow()
    key = _file_key(file)
    done = _rows_done(collection, key)
    try:
        parquet = _open_streaming(file)
        total = parquet.metadata.num_rows
        report.already_imported += min(done, total)
        changes = _writes(collection, file, parquet, key, done, report, progress)
        collection.writes.stream(changes)
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: could not be read to its end (%s); its other rows are kept", file, exc)
        kept = _rows_done(collection, key)
        report.failed.append((str(file), f"unreadable after its first {kept:,} rows: {exc}"))
        return
    report.files += 1


def _writes(
    collection: Collection,
    file: Path,
    parquet: Any,
    key: str,
    done: int,
    report: ImportReport,
    progress: Callable[[int], None] | None,
) -> Iterator[Callable[[], None]]:
    """One change per record batch after the first ``done`` rows: its rows and the file's
    progress (rows read, rejected ones included), written together."""
    store = collection.store
    dims: int | None = None
    position = done
    for batch in _batches_from(parquet, done):
        rows, dims = _rows(batch, dims, str(file), report)
        position += batch.num_rows

        def write(rows: list[EmbeddedImage] = rows, position: int = position) -> None:
            store.write_batch(rows, [])  # on the writer: the rows and the progress in one
            store.set_meta(_PROGRESS + key, str(position))  # change (see WritePath.stream)

        yield write
        report.rows += len(rows)
        if progress is not None:
            progress(batch.num_rows)


#: Meta key prefix of a file's import progress: the rows committed (read, rejected included).
_PROGRESS = "imported-rows:"
#: The key of an earlier version, which counted record batches of ROWS_PER_BATCH rows.
_PROGRESS_IN_BATCHES = "import:"


def _rows_done(collection: Collection, key: str) -> int:
    store = collection.store
    rows = store.get_meta(_PROGRESS + key)
    if rows is not None:
        return int(rows)
    return int(store.get_meta(_PROGRESS_IN_BATCHES + key) or 0) * ROWS_PER_BATCH


def _batches_from(parquet: Any, start: int) -> Iterator[Any]:
    """The file's record batches from row ``start`` on: the row groups wholly before it are
    not read at all."""
    metadata = parquet.metadata
    groups: list[int] = []
    first_row = 0  # of the first row group read
    end = 0  # of the row group below
    for group in range(metadata.num_row_groups):
        end += metadata.row_group(group).num_rows
        if end <= start:
            first_row = end
        else:
            groups.append(group)
    if not groups:
        return
    skip = start - first_row
    for batch in parquet.iter_batches(
        batch_size=ROWS_PER_BATCH, row_groups=groups, use_threads=False
    ):
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        yield batch.slice(skip) if skip else batch
        skip = 0


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


def _matrix(starts: np.ndarray, values: np.ndarray, rows: np.ndarray, dims: int) -> np.ndarray:
    """The vectors of ``rows`` (each ``dims`` long) as one (len(rows), dims) float32 matrix:
    a view of ``values`` when they lie one after the other (the usual file), else copied."""
    first = starts[rows]
    if len(rows) and np.array_equal(first, first[0] + dims * np.arange(len(rows))):
        return values[first[0] : first[0] + dims * len(rows)].reshape(len(rows), dims)
    matrix = np.empty((len(rows), dims), dtype=np.float32)
    for out, begin in enumerate(first):
        matrix[out] = values[begin : begin + dims]
    return matrix


def _rows(
    batch: Any, dims: int | None, file: str, report: ImportReport
) -> tuple[list[EmbeddedImage], int | None]:
    """One record batch's rows to store, checked and scaled to unit length with NumPy over the
    whole batch (a 10,000-row batch is a few array operations, not 10,000 of each)."""
    pa = _pyarrow()
    names = batch.schema.names
    check_columns(batch.schema, file)
    column = batch.column("vector")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    paths = batch.column("path").to_pylist()
    starts, lengths, values = _vector_values(column)
    if dims is None and lengths.any():  # the first vector sets the length
        dims = int(lengths[np.flatnonzero(lengths)[0]])
    named = np.fromiter((bool(p) for p in paths), dtype=bool, count=len(paths))
    sized = named & (lengths == dims) & (lengths > 0)
    candidates = np.flatnonzero(sized)
    matrix = _matrix(starts, values, candidates, dims or 0)
    norms = np.linalg.norm(matrix, axis=1)
    finite = np.isfinite(norms) & (norms > 0)  # a NaN or inf anywhere makes the norm so
    reasons: dict[int, str] = {}
    for row in np.flatnonzero(~sized).tolist():
        reasons[row] = (
            "empty path" if not named[row] else f"vector of length {lengths[row]}, expected {dims}"
        )
    for row in candidates[~finite].tolist():
        reasons[row] = "vector with non-finite or all-zero values"
    for row in sorted(reasons):
        where = f"{file}#{row}" if not named[row] else str(paths[row])
        report.rejected.append((where, reasons[row]))
    kept = candidates[finite]
    # the usual batch (every vector finite) in one pass over the values, no copy of them first
    unit = matrix / norms[:, None] if finite.all() else matrix[finite] / norms[finite, None]
    optional = {
        name: (
            batch.column(name).to_numpy(zero_copy_only=False)[kept].tolist()
            if name in names
            else [default] * len(kept)
        )
        for name, default in (("size", -1), ("mtime_ns", -1), ("width", 0), ("height", 0))
    }
    rows = [
        EmbeddedImage(str(paths[i]), size, mtime, width, height, vector)
        for i, size, mtime, width, height, vector in zip(
            kept.tolist(),
            optional["size"],
            optional["mtime_ns"],
            optional["width"],
            optional["height"],
            unit,
            strict=True,
        )
    ]
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
