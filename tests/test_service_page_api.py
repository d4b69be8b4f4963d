"""What the page needs of the API: region search (a dragged box), a clear answer for an empty
collection and for a file that is not an image."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Collection
from lookalike.image.region import crop, parse_box
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    base = tmp_path_factory.mktemp("page-api")
    shutil.copytree(SAMPLE / "collection", base / "photos")
    db = base / "demo.db"
    with Collection.open(db) as demo:
        demo.add([base / "photos"])
    settings = ServiceSettings(collections_dir=base / "collections", db=db)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def panda_and_cup(tmp_path: Path) -> Path:
    """One photo: a panda on the left half, a cup on the right half."""
    panda = Image.open(SAMPLE / "queries" / "query_panda.jpg").convert("RGB").resize((300, 300))
    cup_file = next(iter(sorted((SAMPLE / "collection" / "cup").glob("*.jpg"))))
    cup = Image.open(cup_file).convert("RGB").resize((300, 300))
    both = Image.new("RGB", (600, 300))
    both.paste(panda, (0, 0))
    both.paste(cup, (300, 0))
    path = tmp_path / "both.jpg"
    both.save(path)
    return path


def categories(response: dict) -> list[str]:
    return [Path(hit["path"]).parent.name for hit in response["results"]]


def test_a_box_searches_that_region(client: TestClient, tmp_path: Path) -> None:
    data = panda_and_cup(tmp_path).read_bytes()

    def search(box: str) -> dict:
        response = client.post(
            "/collections/demo/search",
            params={"k": 3, "box": box},
            files={"file": ("both.jpg", data)},
        )
        assert response.status_code == 200, response.text
        return response.json()

    assert categories(search("0,0,0.5,1")) == ["panda"] * 3
    assert categories(search("0.5,0,1,1")) == ["cup"] * 3


def test_more_like_a_region_of_an_indexed_image(client: TestClient) -> None:
    first = client.get("/collections/demo/images", params={"limit": 1}).json()["items"][0]
    whole = client.get(f"/collections/demo/images/{first['id']}/similar", params={"k": 5})
    part = client.get(
        f"/collections/demo/images/{first['id']}/similar", params={"k": 5, "box": "0.2,0.2,0.8,0.8"}
    )
    assert whole.status_code == part.status_code == 200
    assert whole.json()["query_path"] == first["path"]  # the page titles "more like" with it
    assert first["id"] not in [hit["id"] for hit in part.json()["results"]]
    assert len(part.json()["results"]) == 5
    assert [h["score"] for h in part.json()["results"]] != [
        h["score"] for h in whole.json()["results"]
    ]


@pytest.mark.parametrize("box", ["0,0,1", "0.5,0,0.2,1", "0,0,1,1.5", "0,0,0.01,0.01", "a,b,c,d"])
def test_a_bad_box_is_a_clear_422(client: TestClient, box: str) -> None:
    response = client.post(
        "/collections/demo/search",
        params={"box": box},
        files={"file": ("q.jpg", (SAMPLE / "queries" / "query_panda.jpg").read_bytes())},
    )
    assert response.status_code == 422
    assert "box" in str(response.json()["detail"]) or "pattern" in str(response.json()["detail"])


def test_an_empty_collection_says_so(client: TestClient) -> None:
    assert client.post("/collections", json={"name": "empty"}).status_code == 201
    response = client.post(
        "/collections/empty/search",
        files={"file": ("q.jpg", (SAMPLE / "queries" / "query_panda.jpg").read_bytes())},
    )
    assert response.status_code == 409
    assert response.json()["detail"] == "this collection is empty: add images first"


def test_a_file_that_is_not_an_image_is_a_clear_415(client: TestClient) -> None:
    response = client.post(
        "/collections/demo/search", files={"file": ("notes.txt", b"shopping list: milk")}
    )
    assert response.status_code == 415
    assert "notes.txt" in response.json()["detail"]


def test_parse_box_and_crop() -> None:
    assert parse_box("0.25,0,0.75,0.5") == (0.25, 0.0, 0.75, 0.5)
    image = Image.new("RGB", (200, 100))
    assert crop(image, (0.25, 0.0, 0.75, 0.5)).size == (100, 50)
    with pytest.raises(ValueError, match="four numbers"):
        parse_box("1,2")


# --- issue 18: what the page needs to finish the job ---------------------------------------------


def test_a_heic_query_has_a_jpeg_preview_and_a_bad_file_a_415(client: TestClient) -> None:
    import io

    upright = Image.new("RGB", (120, 60), (230, 20, 20))
    upright.paste((20, 20, 230), (0, 0, 60, 60))  # blue on the left
    heic = io.BytesIO()
    upright.save(heic, format="HEIF", quality=90)
    answer = client.post("/preview", files={"file": ("IMG_1.HEIC", heic.getvalue())})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(answer.content)) as shown:
        assert shown.format == "JPEG" and shown.size == (120, 60)
        left, right = shown.convert("RGB").getpixel((10, 30)), shown.getpixel((110, 30))
    assert left[2] > 150 > left[0] and right[0] > 150 > right[2]
    bad = client.post("/preview", files={"file": ("notes.jpg", b"shopping list")})
    assert bad.status_code == 415
    assert bad.json()["detail"] == "notes.jpg: not a recognised image"
