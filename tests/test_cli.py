"""The lookalike command, run as a user would (in-process through main(), and once for real)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_then_search_json(
    capsys: pytest.CaptureFixture[str], photos: Path, panda_query: Path, tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    code, out, _ = run_cli(capsys, "index", str(photos), "--db", db, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["added"] == 30
    assert [s["path"] for s in summary["skipped"]] == [str(photos / "broken.jpg")]

    query_as_given = str(panda_query)
    code, out, _ = run_cli(
        capsys,
        "search",
        query_as_given,
        str(photos / "cup" / "image_0002.jpg"),
        "--db",
        db,
        "-k",
        "3",
        "--json",
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["query"] for line in lines] == [
        query_as_given,
        str(photos / "cup" / "image_0002.jpg"),
    ]
    first = lines[0]["results"]
    assert len(first) == 3
    assert all(Path(r["path"]).is_absolute() and "/panda/" in r["path"] for r in first)
    assert all(isinstance(r["score"], float) for r in first)
    assert all("/cup/" in r["path"] for r in lines[1]["results"][:2])


def test_search_text_output_and_min_score(
    capsys: pytest.CaptureFixture[str], photos: Path, panda_query: Path, tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    run_cli(capsys, "index", str(photos), "--db", db)
    code, out, _ = run_cli(capsys, "search", str(panda_query), "--db", db, "--min-score", "0.99")
    assert code == 0
    assert out == f"{panda_query}\n  no match at or above 0.99\n"  # nothing that similar
    code, out, _ = run_cli(capsys, "search", str(panda_query), "--db", db, "-k", "2")
    assert len(out.strip().splitlines()) == 3


def test_bad_query_reports_and_continues(
    capsys: pytest.CaptureFixture[str], photos: Path, panda_query: Path, tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    run_cli(capsys, "index", str(photos), "--db", db)
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    code, out, _ = run_cli(capsys, "search", str(bad), str(panda_query), "--db", db, "--json")
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["error"] and lines[0]["results"] == []
    assert len(lines[1]["results"]) == 10


def test_search_on_empty_collection_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, panda_query: Path
) -> None:
    code, _, err = run_cli(capsys, "search", str(panda_query), "--db", str(tmp_path / "e.db"))
    assert code == 2 and "empty" in err


def test_eval_on_class_folders(capsys: pytest.CaptureFixture[str], photos: Path) -> None:
    code, out, _ = run_cli(capsys, "eval", str(photos), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["queries"] == 30 and result["database"] == 30
    # six visually distinct categories of real photos: far above chance (1/6)
    assert result["mAP"] > 0.6 and result["top1"] > 0.8


def test_info_and_remove(capsys: pytest.CaptureFixture[str], photos: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    run_cli(capsys, "index", str(photos), "--db", db)
    code, out, _ = run_cli(capsys, "remove", str(photos / "chair"), "--db", db)
    assert code == 0 and "removed 5" in out
    code, out, _ = run_cli(capsys, "info", "--db", db, "--json")
    assert json.loads(out)["images"] == 25


def test_demo_runs_as_a_real_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "demo", "--db", str(tmp_path / "demo.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert lines and all("panda" in line for line in lines)
