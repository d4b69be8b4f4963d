"""benchmarks/plot_docs.py draws the "start here" plots from the tables of BENCHMARKS.md and
docs/EVALUATION.md: it must find those tables, read every figure it plots from them, and
write the plots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import plot_docs

BENCHMARKS = plot_docs.BENCHMARKS.read_text()
EVALUATION = plot_docs.EVALUATION.read_text()


def test_tables_are_read_from_the_docs() -> None:
    configs, figures = plot_docs.side_by_side(EVALUATION)
    section = EVALUATION.split("### Side by side", 1)[1].split("\n###", 1)[0]
    assert configs[1] == "new default" and len(configs) == 5
    for name in (*plot_docs.CATEGORY_ROWS, *plot_docs.INSTANCE_ROWS):
        values = figures[name]
        assert values[1] is not None and all(v is None or 0 <= v <= 1 for v in values), name
        cell = next(line for line in section.splitlines() if line.startswith(f"| {name} |"))
        assert f"{values[1]:.4f}".rstrip("0").rstrip(".") in cell.replace("**", "")
    indexes = plot_docs.index_choices(BENCHMARKS)
    assert sum("(default)" in p.label for p in indexes) == 1 and len(indexes) >= 4
    pgvector = plot_docs.pgvector_million(BENCHMARKS)
    assert [p.label for p in pgvector][-1] == "ef_search 200" and len(pgvector) == 4
    assert all(0.9 < p.recall <= 1 for p in pgvector + plot_docs.faiss_million(BENCHMARKS))
    assert set(plot_docs.tier_cost(BENCHMARKS)) == {"fp32", "int8"}
    assert set(plot_docs.indexing_rate(BENCHMARKS)) == set(plot_docs.warm_query(BENCHMARKS))


def test_a_table_that_is_not_there_is_an_error() -> None:
    with pytest.raises(StopIteration):
        plot_docs.table_after("# nothing here\n", "### Side by side")
    with pytest.raises(ValueError, match="no table"):
        plot_docs.table_after("### Side by side\n\nno table\n", "### Side by side")


def test_the_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    script = Path(plot_docs.__file__)
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["cost-per-model.png", "quality-by-collection.png", "recall-speed.png"]
    assert all((tmp_path / name).stat().st_size > 10_000 for name in written)
