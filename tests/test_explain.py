"""Explaining a match: the heat adds up to the score, and points at the object."""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Collection
from lookalike.cli import main
from lookalike.encode.models import Embedder
from lookalike.errors import NotFound
from lookalike.search.explain import PANEL_SIDE, explain_pair, heat_inside
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE

CATEGORIES = ["airplanes", "chair", "cup", "panda", "starfish", "sunflower"]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collection, Path]]:
    """The sample photos indexed (30 images: enough for the collection's centring codec)."""
    base = tmp_path_factory.mktemp("explain")
    shutil.copytree(SAMPLE / "collection", base / "photos")
    with Collection.open(base / "c.db") as collection:
        collection.add([base / "photos"])
        yield collection, base


def pasted(photo: Path, background: str, seed: int) -> tuple[Image.Image, tuple[float, ...]]:
    """``photo`` shrunk into a 640 x 480 background of noise or stripes at a known box."""
    rng = np.random.default_rng(seed)
    width, height = 640, 480
    if background == "noise":
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[(np.arange(height) // 16) % 2 == 0] = (200, 180, 60)
    canvas = Image.fromarray(pixels)
    x0, y0, w, h = (40, 30, 300, 240) if seed % 2 else (300, 210, 300, 240)
    canvas.paste(Image.open(photo).convert("RGB").resize((w, h)), (x0, y0))
    return canvas, (x0 / width, y0 / height, (x0 + w) / width, (y0 + h) / height)


def test_heat_adds_up_to_the_search_score(indexed: tuple[Collection, Path]) -> None:
    collection, _ = indexed
    query = SAMPLE / "queries" / "query_panda.jpg"
    results = collection.search(query, k=3)
    for hit in results:
        explained = collection.explain(query, hit.id)
        assert explained.query_heat.shape == explained.result_heat.shape == (7, 7)
        # exact decomposition: cells plus the collection mean's part make the cosine
        total = float(explained.query_heat.sum()) + explained.query_rest
        assert total == pytest.approx(explained.score, abs=1e-5)
        other = float(explained.result_heat.sum()) + explained.result_rest
        assert other == pytest.approx(explained.score, abs=1e-5)
        assert explained.query_rest != 0.0  # the centring codec is in play
        # and it is the score search gave (the same images, the same common space)
        assert explained.score == pytest.approx(hit.score, abs=2e-3)
    assert explained.image.width > PANEL_SIDE  # both images side by side
    stacked = collection.explain(query, results[0].id, stacked=True)
    assert stacked.image.height > PANEL_SIDE >= stacked.image.width  # one above the other


def test_heat_falls_on_the_pasted_object(indexed: tuple[Collection, Path]) -> None:
    """Sample photos pasted into noise and stripes (the object cut from the photo left out:
    only the cells decide): most of the query's positive heat lies in the pasted box."""
    collection, base = indexed
    encoder = collection.embedder
    assert isinstance(encoder, Embedder)
    codec = collection.snapshot().codec
    inside = []
    for seed, category in enumerate(CATEGORIES):
        photo = base / "photos" / category / "image_0003.jpg"
        result = Image.open(photo).convert("RGB")
        for background in ("noise", "stripes"):
            query, box = pasted(photo, background, seed)
            explained = explain_pair(encoder, codec, query, result)
            area = (box[2] - box[0]) * (box[3] - box[1])
            share = heat_inside(explained.query_heat, explained.query_region, query.size, box)
            assert share > 0.5, (category, background, share, area)
            inside.append(share)
    assert float(np.mean(inside)) > 0.75  # the box is 23% of the picture


def test_object_view_is_explained_when_it_scores_higher(
    indexed: tuple[Collection, Path],
) -> None:
    """On a plain background, search scores the object cut from the photo; so does explain."""
    collection, base = indexed
    photo = base / "photos" / "cup" / "image_0003.jpg"
    canvas = Image.new("RGB", (640, 480), (90, 140, 200))
    canvas.paste(Image.open(photo).convert("RGB").resize((300, 240)), (290, 200))
    box = (290 / 640, 200 / 480, 590 / 640, 440 / 480)
    (hit,) = collection.search(canvas, k=1)
    explained = collection.explain(canvas, hit.id)
    assert explained.score == pytest.approx(hit.score, abs=2e-3)
    x0, y0, _, _ = explained.query_region
    assert x0 > 0.4 and y0 > 0.35  # the cells cover the cut object, not the whole photo
    share = heat_inside(explained.query_heat, explained.query_region, canvas.size, box)
    assert share > 0.9


def test_cli_explains_the_chosen_result(
    capsys: pytest.CaptureFixture[str], indexed: tuple[Collection, Path], tmp_path: Path
) -> None:
    collection, _ = indexed
    query = str(SAMPLE / "queries" / "query_panda.jpg")
    out = tmp_path / "why.png"
    db = collection.location
    code = main(["search", query, "--db", db, "--explain", str(out), "--explain-rank", "2"])
    _, err = capsys.readouterr()
    assert code == 0
    assert "result 2" in err
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > PANEL_SIDE
    code = main(
        ["search", query, "--db", db, "-k", "1", "--explain", str(out), "--explain-rank", "5"]
    )
    _, err = capsys.readouterr()
    assert code == 0 and "no result 5 to explain" in err


@pytest.fixture(scope="module")
def client(indexed: tuple[Collection, Path]) -> Iterator[TestClient]:
    collection, base = indexed
    settings = ServiceSettings(
        collections_dir=base / "collections", db=Path(collection.location), roots=[base]
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_http_explains_an_upload_and_an_indexed_query(
    client: TestClient, indexed: tuple[Collection, Path]
) -> None:
    collection, _ = indexed
    name = Path(collection.location).stem
    data = (SAMPLE / "queries" / "query_panda.jpg").read_bytes()
    found = client.post(f"/collections/{name}/search", files={"file": ("q.jpg", data)}).json()
    top = found["results"][0]
    answer = client.post(
        f"/collections/{name}/images/{top['id']}/explain", files={"file": ("q.jpg", data)}
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert float(answer.headers["x-score"]) == pytest.approx(top["score"], abs=2e-3)
    assert Image.open(io.BytesIO(answer.content)).format == "PNG"
    other = found["results"][1]["id"]
    indexed_query = client.get(
        f"/collections/{name}/images/{top['id']}/explain", params={"query_id": other}
    )
    assert indexed_query.status_code == 200
    assert indexed_query.headers["content-type"] == "image/png"


def test_http_explain_client_mistakes(client: TestClient, indexed: tuple[Collection, Path]) -> None:
    collection, _ = indexed
    name = Path(collection.location).stem
    data = (SAMPLE / "queries" / "query_panda.jpg").read_bytes()
    missing = client.post(
        f"/collections/{name}/images/999999/explain", files={"file": ("q.jpg", data)}
    )
    assert missing.status_code == 404
    garbage = client.post(
        f"/collections/{name}/images/1/explain", files={"file": ("q.jpg", b"nope")}
    )
    assert 400 <= garbage.status_code < 500
    no_query = client.get(f"/collections/{name}/images/1/explain", params={"query_id": 999999})
    assert no_query.status_code == 404


def test_a_result_whose_file_is_gone_is_not_found(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE / "collection" / "cup", tmp_path / "cup")
    with Collection.open(tmp_path / "cups.db") as cups:
        cups.add([tmp_path / "cup"])
        (hit,) = cups.search(SAMPLE / "queries" / "query_panda.jpg", k=1)
        Path(hit.path).unlink()
        with pytest.raises(NotFound, match="no longer readable"):
            cups.explain(SAMPLE / "queries" / "query_panda.jpg", hit.id)
        with pytest.raises(NotFound):
            cups.explain(SAMPLE / "queries" / "query_panda.jpg", 999_999)


def test_http_explain_decodes_in_a_decode_slot(
    client: TestClient, indexed: tuple[Collection, Path]
) -> None:
    """Explaining decodes stored files: with every decode slot taken, it waits."""
    collection, _ = indexed
    name = Path(collection.location).stem
    slots = client.app.state.service.decodes  # type: ignore[attr-defined]
    held = [slots.hold(0) for _ in range(slots.ordinary)]
    for slot in held:
        slot.__enter__()
    answered: list[int] = []

    def ask() -> None:
        response = client.get(f"/collections/{name}/images/1/explain", params={"query_id": 2})
        answered.append(response.status_code)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        asker.join(timeout=3)
        assert asker.is_alive() and not answered  # waiting for a slot
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    asker.join(timeout=60)
    assert answered == [200]
