"""Result plots: layout, object boxes, unreadable files, and `search --plot`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Collection
from lookalike.analysis.plots import BOX, contact_sheet, numbered_path, plot_results
from lookalike.cli import main
from lookalike.search.engine import SearchResult
from tests.conftest import SAMPLE, make_image

QUERY = SAMPLE / "queries" / "query_panda.jpg"


def results(
    paths: list[Path], box: tuple[float, float, float, float] | None = None
) -> list[SearchResult]:
    return [
        SearchResult(
            id=n,
            path=str(p),
            score=0.9 - n / 20,
            category="panda" if n % 2 else None,
            cluster=n % 3,
            box=box if n == 0 else None,
        )
        for n, p in enumerate(paths)
    ]


def pandas() -> list[Path]:
    return sorted((SAMPLE / "collection" / "panda").glob("*.jpg"))


def test_grid_size_follows_tiles_and_columns(tmp_path: Path) -> None:
    hits = results(pandas())  # 5 results + the query = 6 tiles
    one_row = Image.open(plot_results(QUERY, hits, tmp_path / "a.png", tile=100, columns=6))
    two_rows = Image.open(plot_results(QUERY, hits, tmp_path / "b.png", tile=100, columns=4))
    assert one_row.format == "PNG" and one_row.size[0] == 6 * (100 + 16)
    assert two_rows.size[0] == 4 * (100 + 16)
    caption_and_tile = one_row.size[1]
    assert two_rows.size[1] == 2 * caption_and_tile
    titled = Image.open(plot_results(QUERY, hits, tmp_path / "c.png", tile=100, title="x"))
    assert titled.size[1] > caption_and_tile


def test_box_is_drawn_in_the_first_result_tile_only(tmp_path: Path) -> None:
    hits = results(pandas()[:2])
    plain = np.asarray(Image.open(plot_results(QUERY, hits, tmp_path / "plain.png", tile=120)))
    boxed = np.asarray(
        Image.open(
            plot_results(
                QUERY,
                results(pandas()[:2], box=(0.2, 0.2, 0.8, 0.8)),
                tmp_path / "box.png",
                tile=120,
            )
        )
    )
    changed = np.argwhere((plain != boxed).any(axis=2))
    assert len(changed) > 100
    cell = 120 + 16  # the first result is the second cell of the row
    assert changed[:, 1].min() >= cell and changed[:, 1].max() < 2 * cell
    assert changed[:, 0].max() < 8 + 120  # inside the picture, not the caption
    assert (boxed[changed[:, 0], changed[:, 1]] == BOX).all(axis=1).mean() > 0.9


def test_unreadable_result_and_pil_query(tmp_path: Path) -> None:
    gone = tmp_path / "gone.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff nope")
    query = Image.open(make_image(tmp_path / "q.png", seed=1, fmt="PNG"))
    out = plot_results(query, results([gone, broken]), tmp_path / "out.jpg", tile=80)
    assert Image.open(out).format == "JPEG"


def test_numbered_paths() -> None:
    assert numbered_path("out/plot.png", 1) == Path("out/plot.png")
    assert numbered_path("out/plot.png", 3) == Path("out/plot-3.png")


def test_contact_sheet_grid() -> None:
    sheet = contact_sheet(pandas(), "pandas", thumb=50, columns=2)
    assert sheet.width == 2 * (50 + 4) + 4
    assert sheet.height > 3 * (50 + 4)  # 5 thumbnails: 3 rows under the title


def test_cli_search_plot_one_file_per_query(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "c.db")
    main(["index", str(photos), "--db", db])
    capsys.readouterr()
    shutil.copy(QUERY, tmp_path / "query.jpg")
    out = tmp_path / "plots" / "hits.png"
    code = main(
        [
            "search",
            str(QUERY),
            str(photos / "cup" / "image_0002.jpg"),
            "--db",
            db,
            "-k",
            "4",
            "--json",
            "--plot",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert [json.loads(line)["query"] for line in captured.out.splitlines()] == [
        str(QUERY),
        str(photos / "cup" / "image_0002.jpg"),
    ]  # stdout stays JSON only
    first, second = Image.open(out), Image.open(tmp_path / "plots" / "hits-2.png")
    assert first.size == second.size and first.width == 5 * (224 + 16)
    assert "hits-2.png" in captured.err
    with Collection.open(db) as collection:
        assert len(collection) == 30
