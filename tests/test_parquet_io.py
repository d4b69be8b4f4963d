"""lookalike embed --out FILE.parquet and lookalike import: vectors in and out."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookalike.cli import main
from lookalike.collection import Collection
from lookalike.encode.models import builtin_spec
from lookalike.pipeline import parquet_io
from tests.conftest import make_image


def test_embed_then_import_matches_indexing(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "vectors.parquet"
    assert main(["embed", str(photos), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 30 and len(summary["skipped"]) == 1
    table = pq.read_table(out)
    assert table.num_rows == 30
    assert table.schema.field("path").type == pa.string()
    assert table.schema.field("vector").type == pa.list_(pa.float32())
    spec = parquet_io.read_spec(out)
    assert spec == builtin_spec("efficientnet-lite0")
    assert not (tmp_path / "vectors.parquet.partial").exists()

    imported = tmp_path / "imported.db"
    assert main(["import", str(out), "--db", str(imported), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 30
    indexed = tmp_path / "indexed.db"
    assert main(["index", str(photos), "--db", str(indexed), "--json"]) == 0
    capsys.readouterr()
    with Collection.open(imported) as a, Collection.open(indexed) as b:
        assert len(a) == len(b) == 30
        query = str(photos / "panda" / sorted(p.name for p in (photos / "panda").iterdir())[0])
        assert [r.path for r in a.search(query, k=5)] == [r.path for r in b.search(query, k=5)]
        _, vectors_a = a.store.load_vectors()
        _, vectors_b = b.store.load_vectors()
        # the same float32 vectors (to 1e-6), each stored as float16: one step apart at most
        step = np.spacing(np.abs(vectors_b).astype(np.float16)).astype(np.float32)
        assert (np.abs(vectors_a - vectors_b) <= step).all()
        # Sizes and mtimes came along: indexing the folder now finds nothing to do.
        assert [c.path for c in a.plan([photos]).todo] == [str(photos / "broken.jpg")]


def write_vectors(path: Path, spec_json: str, paths: list[str], vectors: np.ndarray) -> None:
    table = pa.table(
        {"path": paths, "vector": pa.array(list(vectors), type=pa.list_(pa.float32()))},
        schema=pa.schema(
            [("path", pa.string()), ("vector", pa.list_(pa.float32()))],
            metadata={b"lookalike.model": spec_json.encode()},
        ),
    )
    pq.write_table(table, path, row_group_size=4)


def test_import_is_resumable_idempotent_and_rejects_bad_rows(tmp_path: Path, monkeypatch) -> None:
    spec = builtin_spec("efficientnet-lite0")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(25, 1280)).astype(np.float32)
    vectors[3] = np.nan
    paths = [f"/elsewhere/{i}.jpg" for i in range(25)]
    paths[4] = ""
    file = tmp_path / "v.parquet"
    write_vectors(file, spec.to_json(), paths, vectors)
    monkeypatch.setattr(parquet_io, "ROWS_PER_BATCH", 5)
    with Collection.open(tmp_path / "c.db") as collection:
        real = _crash_on_batch(3, collection, monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            parquet_io.import_files(collection, [file])
        assert len(collection) == 8  # two batches of five, less the two bad rows
        monkeypatch.setattr(collection.store, "write_batch", real)
        report = parquet_io.import_files(collection, [file])
        assert report.already_imported == 10 and report.rows == 15
        assert len(collection) == 23
        again = parquet_io.import_files(collection, [file])
        assert again.rows == 0 and again.already_imported == 25 and len(collection) == 23
        _, stored = collection.store.load_vectors()
        assert np.allclose(np.linalg.norm(stored, axis=1), 1, atol=1e-5)


def test_import_refuses_another_models_file(tmp_path: Path) -> None:
    other = builtin_spec("efficientnet-lite2")
    file = tmp_path / "lite2.parquet"
    write_vectors(file, other.to_json(), ["/x/a.jpg"], np.ones((1, 1408), dtype=np.float32))
    db = tmp_path / "c.db"
    make_image(tmp_path / "img" / "a.jpg", 1)
    assert main(["index", str(tmp_path / "img"), "--db", str(db)]) == 0
    assert main(["import", str(file), "--db", str(db)]) == 2
    with Collection.open(db) as collection:
        with pytest.raises(ValueError, match="efficientnet-lite2"):
            parquet_io.import_files(collection, [file])
        assert len(collection) == 1
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"path": ["/a"], "vector": [[1.0, 2.0]]}), plain)
    with pytest.raises(ValueError, match=r"lookalike\.model"):
        parquet_io.read_spec(plain)


@pytest.mark.parametrize(
    "vector_type",
    [
        pa.list_(pa.float32()),
        pa.large_list(pa.float32()),
        pa.list_(pa.float32(), 1280),
        pa.list_(pa.float16(), 1280),
        pa.large_list(pa.float16()),
    ],
    ids=["list", "large_list", "fixed_size_list", "fixed_size_list_f16", "large_list_f16"],
)
def test_import_reads_every_list_kind_of_floats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], vector_type: pa.DataType
) -> None:
    """Arrow's fixed-size list is the usual embedding column of other tools; importing one
    failed with AttributeError ('FixedSizeListArray' has no 'offsets')."""
    spec = builtin_spec("efficientnet-lite0")
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(7, 1280)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    paths = [f"/elsewhere/{i}.jpg" for i in range(7)]
    element = np.float16 if pa.types.is_float16(vector_type.value_type) else np.float32
    column = pa.array(list(vectors.astype(element)), type=vector_type)
    column = pa.concat_arrays([column, pa.nulls(1, type=vector_type)])  # a null row too
    table = pa.table(
        {"path": [*paths, "/elsewhere/null.jpg"], "vector": column},
        schema=pa.schema(
            [("path", pa.string()), ("vector", vector_type)],
            metadata={b"lookalike.model": spec.to_json().encode()},
        ),
    )
    file = tmp_path / "v.parquet"
    pq.write_table(table, file, row_group_size=3)  # row groups: batches that are slices
    db = tmp_path / "c.db"
    assert main(["import", str(file), "--db", str(db), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 7 and [r["path"] for r in summary["rejected"]] == [
        "/elsewhere/null.jpg"
    ]
    with Collection.open(db) as collection:
        ids, stored = collection.store.load_vectors()
        by_path = collection.store.paths(ids)
        order = [paths.index(by_path[int(i)]) for i in ids]
        # stored as float16 whatever the column's type: one float16 step apart at most
        step = np.spacing(np.abs(stored).astype(np.float16)).astype(np.float32)
        assert (np.abs(stored - vectors[order]) <= step).all()


@pytest.mark.parametrize(
    "vector_type",
    [pa.list_(pa.int32()), pa.string(), pa.list_(pa.string()), pa.float32()],
)
def test_import_refuses_other_vector_columns_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], vector_type: pa.DataType
) -> None:
    spec = builtin_spec("efficientnet-lite0")
    values = {
        "list<item: int32>": [[1, 2]],
        "string": ["1,2"],
        "list<item: string>": [["1", "2"]],
        "float": [1.0],
    }[str(vector_type)]
    table = pa.table(
        {"path": ["/a.jpg"], "vector": pa.array(values, type=vector_type)},
        schema=pa.schema(
            [("path", pa.string()), ("vector", vector_type)],
            metadata={b"lookalike.model": spec.to_json().encode()},
        ),
    )
    file = tmp_path / "v.parquet"
    pq.write_table(table, file)
    db = tmp_path / "c.db"
    assert main(["import", str(file), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "vector column" in err and "fixed_size_list" in err
    with Collection.open(db) as collection:
        assert len(collection) == 0


def _parts(
    folder: Path, spec_json: str, files: int, rows: int, seed: int = 5, name: str = "elsewhere"
) -> np.ndarray:
    """``files`` Parquet files of ``rows`` unit vectors each in ``folder`` (row groups of 10
    rows; paths /``name``/file/row.jpg); all their vectors, in order."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(files * rows, 1280)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(files):
        table = pa.table(
            {
                "path": [f"/{name}/{part}/{i}.jpg" for i in range(rows)],
                "vector": pa.array(
                    list(vectors[part * rows : (part + 1) * rows]), type=pa.list_(pa.float32())
                ),
            },
            schema=pa.schema(
                [("path", pa.string()), ("vector", pa.list_(pa.float32()))],
                metadata={b"lookalike.model": spec_json.encode()},
            ),
        )
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=10)
    return vectors


def test_import_of_a_folder_or_a_glob_reports_and_skips_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = builtin_spec("efficientnet-lite0")
    parts = tmp_path / "parts"
    vectors = _parts(parts, spec.to_json(), files=3, rows=30)
    (parts / "torn.parquet").write_bytes(b"PAR1 not really")
    write_vectors(
        parts / "lite2.parquet",
        builtin_spec("efficientnet-lite2").to_json(),
        ["/x/a.jpg"],
        np.ones((1, 1408), dtype=np.float32),
    )
    db = tmp_path / "c.db"
    assert main(["import", str(parts), "--db", str(db), "--json"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["files"] == 3 and summary["rows"] == 90 and summary["images"] == 90
    assert sorted(Path(f["file"]).name for f in summary["failed"]) == [
        "lite2.parquet",
        "torn.parquet",
    ]
    assert "skipped" in captured.err and "torn.parquet" in captured.err
    with Collection.open(db) as collection:
        ids, stored = collection.store.load_vectors()
        paths = collection.store.paths(ids)
        expected = {f"/elsewhere/{i // 30}/{i % 30}.jpg": v for i, v in enumerate(vectors)}
        want = np.stack([expected[paths[int(i)]] for i in ids])
        # stored as float16: one float16 step from what was imported at most
        assert (np.abs(stored - want) <= np.spacing(np.abs(stored).astype(np.float16))).all()
    # a pattern names the same files: all already in, nothing written again
    assert main(["import", str(parts / "part-*.parquet"), "--db", str(db), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["rows"] == 0 and again["already_imported"] == 90 and again["images"] == 90
    assert main(["import", str(tmp_path / "none-*.parquet"), "--db", str(db)]) == 2
    assert "no Parquet file" in capsys.readouterr().err


def _damage(file: Path, row_group: int) -> None:
    """Overwrite the middle of a row group's vector data with garbage."""
    column = pq.ParquetFile(file).metadata.row_group(row_group).column(1)
    start = column.data_page_offset
    middle = start + column.total_compressed_size // 2
    with file.open("r+b") as out:
        out.seek(start)
        out.write(b"\xfe" * (middle - start))


def test_a_file_damaged_midway_keeps_the_rows_before_and_the_next_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = builtin_spec("efficientnet-lite0")
    parts = tmp_path / "parts"
    _parts(parts, spec.to_json(), files=2, rows=40)
    _damage(parts / "part-0.parquet", row_group=2)  # rows 20 to 29
    monkeypatch.setattr(parquet_io, "ROWS_PER_BATCH", 10)
    with Collection.open(tmp_path / "c.db") as collection:
        report = parquet_io.import_files(collection, [parts])
        assert report.files == 1 and [Path(f).name for f, _ in report.failed] == ["part-0.parquet"]
        assert "first 20 rows" in report.failed[0][1]
        assert len(collection) == 20 + 40
        assert collection.store.lookup("/elsewhere/1/39.jpg") is None  # (not a file on disk)
        assert set(collection.store.file_states("/elsewhere/1")) == {
            f"/elsewhere/1/{i}.jpg" for i in range(40)
        }


def test_a_resumed_import_does_not_read_the_row_groups_already_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows committed are recorded, and the row groups before them are not read again: a
    resumed import of a file whose early row groups were since damaged on disk still ends."""
    spec = builtin_spec("efficientnet-lite0")
    parts = tmp_path / "parts"
    _parts(parts, spec.to_json(), files=1, rows=50)
    file = parts / "part-0.parquet"
    monkeypatch.setattr(parquet_io, "ROWS_PER_BATCH", 10)
    with Collection.open(tmp_path / "c.db") as collection:
        real = _crash_on_batch(4, collection, monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            parquet_io.import_files(collection, [file])
        assert len(collection) == 30
        monkeypatch.setattr(collection.store, "write_batch", real)
        stat = file.stat()
        _damage(file, row_group=1)  # rows 10 to 19: in already
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        report = parquet_io.import_files(collection, [file])
        assert not report.failed and report.already_imported == 30 and report.rows == 20
        assert len(collection) == 50


def _crash_on_batch(
    n: int, collection: Collection, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., None]:
    """The store's ``n``-th batch write is interrupted (as Ctrl-C would), the ones before it
    are written; the real write, to put back."""
    calls = 0
    real = collection.store.write_batch

    def crash(embedded, skipped, forget=()):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == n:
            raise KeyboardInterrupt
        real(embedded, skipped, forget)

    monkeypatch.setattr(collection.store, "write_batch", crash)
    return real
