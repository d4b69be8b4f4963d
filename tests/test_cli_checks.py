"""What a new user of the ``lookalike`` command meets: honest exit codes, checked numbers,
the same option names everywhere, and output that survives odd file names and pipes."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import config
from lookalike.cli import main
from tests.conftest import SAMPLE


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors and --version
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    path = str(tmp_path / "c.db")
    assert run_cli(capsys, "index", str(photos), "--db", path)[0] == 0
    return path


def test_indexing_a_folder_that_does_not_exist_fails_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    where = tmp_path / "new" / "c.db"
    code, _out, err = run_cli(capsys, "index", str(tmp_path / "no-such-folder"), "--db", str(where))
    assert code == 2
    assert f"no such file or folder: {tmp_path / 'no-such-folder'}" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["info"],
        ["search", "x.jpg"],
        ["classify", "x.jpg"],
        ["remove", "x.jpg"],
        ["cluster", "-k", "2"],
        ["duplicates"],
        ["serve"],
    ],
)
def test_commands_other_than_index_need_an_existing_collection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]
) -> None:
    where = tmp_path / "sub" / "c.db"
    code, _, err = run_cli(capsys, *args, "--db", str(where))
    assert code == 2
    assert f"no collection at {where}" in err
    assert not (tmp_path / "sub").exists()


def test_a_store_whose_driver_is_missing_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lookalike.store import registry

    monkeypatch.setitem(registry.STORE_SCHEMES, "nosuchdb", "lookalike_no_such_driver:Store")
    code, out, err = run_cli(capsys, "info", "--db", "nosuchdb://host/x")
    assert code == 2 and out == ""
    assert err == (
        "error: --db nosuchdb://... needs an optional part: "
        "No module named 'lookalike_no_such_driver'\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "q.jpg", "-k", "0"], "-k/--top: must be at least 1, got 0"),
        (["search", "q.jpg", "-k", "-1"], "must be at least 1, got -1"),
        (["search", "q.jpg", "--min-score", "2"], "a cosine is between -1 and 1, got 2.0"),
        (["search", "q.jpg", "--expand", "-3"], "must be 0 or more, got -3"),
        (["duplicates", "--threshold", "1.5"], "must be above 0 and at most 1, got 1.5"),
        (["duplicates", "--threshold", "-1"], "must be above 0 and at most 1, got -1.0"),
        (["classify", "q.jpg", "--top", "0"], "must be at least 1"),
        (["cluster", "-k", "0"], "must be at least 1"),
        (["index", ".", "--pca", "-5"], "must be 0 or more"),
        (["index", ".", "--batch-size", "0"], "must be at least 1"),
        (["search", "q.jpg", "--box", "0.5,0,0.2,1"], "box must have 0 <= x0 < x1 <= 1"),
        (["search", "q.jpg", "--box", "1,2"], "box must be four numbers"),
    ],
)
def test_numbers_are_checked(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert message in err
    assert f"usage: lookalike {args[0]}" in err  # the command's usage, not the top one


def test_a_typo_shows_the_commands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "search", "q.jpg", "--minscore", "0.5")
    assert code == 2
    assert err.startswith("usage: lookalike search")
    assert "unrecognized arguments: --minscore 0.5" in err


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["serach", "q.jpg"], "unknown command 'serach': did you mean 'search'?"),
        (["-v", "idnex", "photos"], "unknown command 'idnex': did you mean 'index'?"),
        (["zzz"], "unknown command 'zzz': choose from index, search, concepts, classify, eval"),
    ],
)
def test_a_mistyped_command_gets_the_closest_one(
    capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("usage: lookalike ") and f"lookalike: error: {error}" in err


def test_counts_and_rates_read_as_english(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE / "collection" / "cup", folder)
    (folder / "notes.txt").write_text("a sidecar")
    db = str(tmp_path / "c.db")
    code, out, _ = run_cli(capsys, "index", str(folder), "--db", db)
    assert code == 0 and re.search(r"^added 5, .* in \d+\.\d+ s \(\d+ images/s\)$", out, re.M)
    assert "  left out 1 file that is not an image by its extension (1 .txt);" in out
    code, out, _ = run_cli(capsys, "index", str(folder), "--db", db)  # nothing to embed
    assert code == 0 and re.search(r"^added 0, .*, skipped 0 in \d\.\d\d s$", out, re.M)
    out_file = tmp_path / "one.parquet"
    code, out, _ = run_cli(capsys, "embed", str(folder / "image_0002.jpg"), "--out", str(out_file))
    assert code == 0 and out.startswith(f"wrote 1 vector to {out_file}, skipped 0 files, in ")
    code, out, _ = run_cli(capsys, "import", str(out_file), "--db", str(tmp_path / "new.db"))
    assert code == 0
    assert out == "imported 1 vector from 1 file (0 already imported, 0 rejected); 1 image\n"


def test_embed_refuses_a_folder_that_does_not_exist_as_index_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing, out = tmp_path / "missing-folder", tmp_path / "y.parquet"
    code, stdout, err = run_cli(capsys, "embed", str(missing), "--out", str(out))
    assert (code, stdout, err) == (2, "", f"error: no such file or folder: {missing}\n")
    assert list(tmp_path.iterdir()) == []  # no y.parquet, nor y.parquet.partial


def test_index_with_labels_says_it_trains_the_classifier(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    photos: Path,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="lookalike")
    db = str(tmp_path / "c.db")
    code, _, err = run_cli(capsys, "index", str(photos), "--db", db, "--categories-from-folders")
    assert code == 0
    assert "labels: 30 files in 6 categories; fitting the category classifier...\n" in err
    messages = [r.getMessage() for r in caplog.records if r.name == "lookalike.search.fitting"]
    assert messages[0] == "training the category classifier on 30 labelled images (6 categories)"
    assert re.fullmatch(r"category classifier trained in \d+\.\d s", messages[1])


def test_info_gives_the_search_index_size_per_image(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    small = tmp_path / "small.db"
    assert run_cli(capsys, "index", str(SAMPLE / "collection" / "cup"), "--db", str(small))[0] == 0
    for collection in (db, str(small)):  # 30 images: centred by the default codec; 5: raw
        code, out, _ = run_cli(capsys, "info", "--db", collection)
        assert code == 0
        assert "  search index: exact (setting auto), 5,120 bytes per image\n" in out
        code, out, _ = run_cli(capsys, "info", "--db", collection, "--json")
        assert json.loads(out)["index"]["bytes_per_image"] == 4 * 1280  # lite0's 1,280 floats


def test_a_folder_given_as_db_gets_a_suggestion_that_works(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, panda_query: Path
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE / "collection" / "cup", folder)
    for command in (["search", str(panda_query)], ["info"], ["index", str(folder)]):
        code, _, err = run_cli(capsys, *command, "--db", str(folder))
        assert code == 2
        assert err == (
            f"error: {folder} is a folder, not a collection file: to search its images, index "
            f"them (`lookalike index {folder}`, into the default collection, or with "
            f"--db {folder / 'lookalike.db'})\n"
        )
    suggested = str(folder / "lookalike.db")  # (the default collection is the session's)
    assert run_cli(capsys, "index", str(folder), "--db", suggested)[0] == 0
    code, out, _ = run_cli(capsys, "search", str(panda_query), "--db", suggested, "-k", "1")
    assert code == 0 and str(folder) in out


def test_verbose_after_the_command_and_version(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run_cli(capsys, "info", "--db", db, "-v")
    assert code == 0 and "30 images" in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == "lookalike 0.1.0"


def test_k_is_the_same_option_everywhere(
    capsys: pytest.CaptureFixture[str], db: str, panda_query: Path
) -> None:
    for option in ("-k", "--top"):
        code, out, _ = run_cli(capsys, "search", str(panda_query), "--db", db, option, "2")
        assert code == 0 and len(out.splitlines()) == 3
        code, out, _ = run_cli(capsys, "classify", str(panda_query), "--db", db, option, "2")
        assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run_cli(capsys, "cluster", "-k", "3", "--db", db)
    assert code == 0 and "3 clusters of 30 images" in out
    code, _, err = run_cli(capsys, "cluster", "-k", "31", "--db", db)
    assert code == 2 and "use -k 30 or less" in err


def test_help_shows_defaults_and_the_demo_collection(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "search", "--help")
    assert f"results per query (default: {config.DEFAULT_K})" in " ".join(out.split())
    _, out, _ = run_cli(capsys, "demo", "--help")
    assert str(config.demo_db()) in "".join(out.split())
    assert "lookalike.db" not in out


def test_demo_ends_with_the_next_steps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    where = tmp_path / "demo.db"
    code, out, _ = run_cli(capsys, "demo", "--db", str(where))
    assert code == 0
    assert f"lookalike serve --db {where}" in out
    assert "--plot results.png" in out
    # ...and the commands it names work on what it made.
    query = out.split("query: ")[1].split()[0]
    code, out, _ = run_cli(capsys, "search", query, "--db", str(where), "-k", "1")
    assert code == 0 and "/panda/" in out


def test_a_plain_serve_after_the_demo_serves_the_demo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from lookalike.cli import _parse, _serve_settings
    from lookalike.service import create_app

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "fresh"))  # a new user's data folder
    _serve_settings(_parse(["serve"]))
    note = capsys.readouterr().err
    assert note.startswith(f"note: no collection to serve yet: none in {config.collections_dir()}")
    assert "`lookalike demo` puts one in the folder" in note
    code, out, _ = run_cli(capsys, "demo")
    assert code == 0 and "\n  lookalike serve   # a web page at http://127.0.0.1:8000" in out
    settings = _serve_settings(_parse(["serve"]))  # what `lookalike serve` then serves
    assert capsys.readouterr().err == ""
    with TestClient(create_app(settings)) as client:
        listed = client.get("/collections").json()
        assert [c["name"] for c in listed["collections"]] == ["demo"]
        assert [c["images"] for c in listed["collections"]] == [30]


def test_a_labels_csv_with_another_header_is_explained(
    capsys: pytest.CaptureFixture[str], photos: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\npanda/image_0002.jpg,panda\n")
    code, _, err = run_cli(capsys, "eval", str(photos), "--labels", str(labels))
    assert code == 2
    assert "needs a header with the columns path,class_name; it has file,label" in err


def test_classify_says_where_its_labels_come_from(
    capsys: pytest.CaptureFixture[str], db: str, panda_query: Path, photos: Path, tmp_path: Path
) -> None:
    code, out, err = run_cli(capsys, "classify", str(panda_query), "--db", db, "--json")
    assert code == 0
    assert "ImageNet classes" in err
    line = json.loads(out)
    assert line["source"] == "imagenet" and "giant panda" in line["predictions"][0]["category"]
    code, out, err = run_cli(capsys, "search", str(panda_query), "--db", db, "--by-category")
    assert code == 0 and "no categories" in err and "searches everything" in err

    labelled = str(tmp_path / "l.db")
    run_cli(capsys, "index", str(photos), "--db", labelled, "--categories-from-folders")
    code, out, err = run_cli(capsys, "classify", str(panda_query), "--db", labelled, "--json")
    assert err == "" and json.loads(out)["source"] == "collection"
    assert json.loads(out)["predictions"][0]["category"] == "panda"


def test_weak_matches_are_marked(
    capsys: pytest.CaptureFixture[str], db: str, panda_query: Path, tmp_path: Path
) -> None:
    # Flat noise is like none of the photos.
    noise = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(noise)
    code, out, _ = run_cli(capsys, "search", str(noise), "--db", db, "-k", "3")
    assert code == 0
    assert out.count("(weak)") == 3 and "every match is weak" in out
    code, out, _ = run_cli(capsys, "search", str(noise), "--db", db, "-k", "3", "--json")
    assert all(r["weak"] for r in json.loads(out)["results"])
    code, out, _ = run_cli(capsys, "search", str(panda_query), "--db", db, "-k", "3")
    assert "(weak)" not in out and "every match is weak" not in out


def test_index_summary_counts_skipped_and_left_out_files(
    capsys: pytest.CaptureFixture[str], photos: Path, tmp_path: Path
) -> None:
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("a sidecar")
    (photos / "scan.xcf").write_bytes(b"gimp")
    where = str(tmp_path / "c.db")
    run_cli(capsys, "index", str(photos), "--db", where)
    code, out, _ = run_cli(capsys, "index", str(photos), "--db", where, "--json")
    assert code == 0
    summary = json.loads(out)
    assert (summary["unchanged"], summary["skipped_before"]) == (30, 1)
    assert summary["left_out"] == {".txt": 1, ".xcf": 1}
    _, out, _ = run_cli(capsys, "index", str(photos), "--db", where)
    assert "unchanged 30, skipped 0 (and 1 skipped before" in out
    assert "left out 2 files that are not images by their extension (1 .txt, 1 .xcf)" in out
    _code, out, _ = run_cli(capsys, "info", "--db", where, "--json")
    assert json.loads(out)["images"] == 30 and len(json.loads(out)["skipped"]) == 1


def test_odd_file_names_in_text_and_json(
    capsys: pytest.CaptureFixture[str], photos: Path, tmp_path: Path
) -> None:
    odd = photos / "panda" / "line\nbreak.jpg"
    accented = photos / "panda" / "café.jpg"
    shutil.copy(photos / "panda" / "image_0002.jpg", odd)
    shutil.copy(photos / "panda" / "image_0003.jpg", accented)
    where = str(tmp_path / "c.db")
    code, out, _ = run_cli(capsys, "index", str(photos / "panda"), "--db", where, "--json")
    assert code == 0 and json.loads(out)["added"] == 7
    code, out, _ = run_cli(capsys, "search", str(odd), "--db", where, "-k", "6")
    lines = out.splitlines()
    assert len(lines) == 7  # the query and six results, one line each
    assert lines[0] == str(odd).replace("\n", "\\n")
    assert any(line.endswith("café.jpg") for line in lines)
    code, out, _ = run_cli(capsys, "search", str(accented), "--db", where, "-k", "6", "--json")
    assert '"query": "' + str(accented) + '"' in out  # not \u00e9
    assert str(odd) in [r["path"] for r in json.loads(out)["results"]]


def test_a_closed_pipe_ends_quietly(db: str, tmp_path: Path) -> None:
    """`lookalike info | head -1` where head has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lookalike.cli", "info", "--db", db],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141


def test_eval_of_an_existing_collection_is_checked_first(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    """``eval --db`` needs queries and varies only search settings: refused before anything
    is opened or written."""
    code, _, err = run_cli(capsys, "eval", "--db", db)
    assert code == 2 and "--db and --per-query need --queries" in err
    code, _, err = run_cli(capsys, "eval")
    assert code == 2 and "give the folder to evaluate" in err
    queries = tmp_path / "q.csv"
    queries.write_text("query_path,source_path\nq.jpg,s.jpg\n")
    out = tmp_path / "per-query.jsonl"
    code, _, err = run_cli(
        capsys, "eval", "--db", db, "--queries", str(queries), "--per-query", str(out),
        "--compare", "rerank=1", "pca=256",
    )  # fmt: skip
    assert code == 2 and "only qe, bycat, rerank and qloc can be compared" in err
    assert not out.exists()
