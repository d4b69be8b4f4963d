"""Calibrated confidences beside the score: same item, same kind, through every door."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Collection
from lookalike.cli import main
from lookalike.search import calibration
from lookalike.search.engine import SearchResult
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE


def test_margins_are_over_the_best_other_result() -> None:
    scores = np.array([[0.9, 0.5, 0.4, -np.inf], [0.3, -np.inf, -np.inf, -np.inf]])
    margins = calibration.margins(scores)
    assert margins[0, :3] == pytest.approx([0.4, -0.4, -0.5])
    assert margins[1, 0] == 0.0  # a single result: no other to be ahead of


def test_a_model_without_a_table_gets_no_confidences() -> None:
    assert calibration.for_model("onnx:mine.onnx (fp32)") is None
    plain = SearchResult(1, "/a.jpg", 0.5)
    assert "same_item" not in plain.as_dict() and "same_kind" not in plain.as_dict()


def test_the_default_model_is_calibrated() -> None:
    table = calibration.for_model("efficientnet-lite0 (int8)")
    assert table is not None
    sure, unsure = table.confidences(np.array([[0.95, 0.3, 0.25]]))
    assert sure[0, 0] > 0.9 > sure[0, 1]  # a far-ahead near-copy vs the rest
    assert unsure[0, 0] > unsure[0, 1] > unsure[0, 2]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collection, Path]]:
    base = tmp_path_factory.mktemp("calibrated")
    shutil.copytree(SAMPLE / "collection", base / "photos")
    with Collection.open(base / "c.db") as collection:
        collection.add([base / "photos"])
        yield collection, base


def test_an_edited_copy_is_the_same_item_and_another_photo_is_not(
    indexed: tuple[Collection, Path],
) -> None:
    collection, base = indexed
    source = base / "photos" / "starfish" / "image_0004.jpg"
    copy = base / "copy.jpg"
    with Image.open(source) as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(copy, quality=20)
    results = collection.search(copy, k=5)
    assert results[0].path == str(source)
    assert results[0].same_item is not None and results[0].same_item > 0.5
    assert all(r.same_item is not None and r.same_item < 0.5 for r in results[1:])
    kinds = [r.same_kind for r in results]
    assert all(k is not None and 0 < k < 1 for k in kinds)
    assert kinds == sorted(kinds, reverse=True)  # in score order: more alike, surer
    other = collection.search(SAMPLE / "queries" / "query_panda.jpg", k=5)
    assert all(r.same_item is not None and r.same_item < 0.5 for r in other)


def test_every_door_gives_the_same_confidences(
    capsys: pytest.CaptureFixture[str], indexed: tuple[Collection, Path]
) -> None:
    collection, base = indexed
    query = SAMPLE / "queries" / "query_panda.jpg"
    python = [(r.id, r.same_item, r.same_kind) for r in collection.search(query, k=5)]
    assert main(["search", str(query), "--db", collection.location, "-k", "5", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    cli = [(r["id"], r["same_item"], r["same_kind"]) for r in line["results"]]
    settings = ServiceSettings(
        collections_dir=base / "collections", db=Path(collection.location), roots=[base]
    )
    with TestClient(create_app(settings)) as client:
        name = Path(collection.location).stem
        found = client.post(
            f"/collections/{name}/search?k=5", files={"file": ("q.jpg", query.read_bytes())}
        ).json()
    http = [(h["id"], h["same_item"], h["same_kind"]) for h in found["results"]]
    for door in (cli, http):
        assert [i for i, _, _ in door] == [i for i, _, _ in python]
        for (_, item, kind), (_, want_item, want_kind) in zip(door, python, strict=True):
            assert item == pytest.approx(want_item, abs=1e-4)
            assert kind == pytest.approx(want_kind, abs=1e-4)
