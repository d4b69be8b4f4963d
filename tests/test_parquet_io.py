"""lookalike embed --out FILE.parquet and lookalike import: vectors in and out."""

from __future__ import annotations

import json
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
        assert np.allclose(vectors_a, vectors_b, atol=1e-6)
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
        calls = 0
        real = collection.store.write_batch

        def crash_on_third(embedded, skipped, forget=()):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 3:
                raise KeyboardInterrupt
            real(embedded, skipped, forget)

        monkeypatch.setattr(collection.store, "write_batch", crash_on_third)
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
        tolerance = 1e-3 if pa.types.is_float16(vector_type.value_type) else 1e-6
        assert np.allclose(stored, vectors[order], atol=tolerance)


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
