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


@pytest.fixture
def labelled(tmp_path: Path) -> Iterator[TestClient]:
    """The sample photos labelled by folder and grouped into 3 clusters (its own server: it is
    written to)."""
    shutil.copytree(SAMPLE / "collection", tmp_path / "photos")
    db = tmp_path / "demo.db"
    with Collection.open(db) as demo:
        demo.add([tmp_path / "photos"])
        demo.set_labels({str(p): p.parent.name for p in (tmp_path / "photos").rglob("*.jpg")})
        demo.cluster(3)
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


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


def test_images_are_narrowed_by_category_folder_and_cluster(labelled: TestClient) -> None:
    every = labelled.get("/collections/demo/images").json()
    assert every["total"] == 30
    facets = every["facets"]
    assert {v["value"]: v["count"] for v in facets["category"]} == {
        name: 5 for name in ("airplanes", "chair", "cup", "panda", "starfish", "sunflower")
    }
    assert sum(v["count"] for v in facets["cluster"]) == 30 and len(facets["cluster"]) == 3
    assert sorted(Path(v["value"]).name for v in facets["folder"]) == sorted(
        v["value"] for v in facets["category"]
    )
    assert every["items"][0]["category"] is not None and every["items"][0]["cluster"] is not None

    panda = labelled.get("/collections/demo/images", params={"category": "panda"}).json()
    assert panda["total"] == 5 and panda["category"] == "panda"
    assert {i["category"] for i in panda["items"]} == {"panda"}
    # Each facet counts within the other filters, so another category is one choice away.
    assert len(panda["facets"]["category"]) == 6
    assert [v["count"] for v in panda["facets"]["folder"]] == [5]
    folder = panda["facets"]["folder"][0]["value"]
    assert Path(folder).name == "panda"

    cluster = int(every["facets"]["cluster"][0]["value"])
    both = labelled.get(
        "/collections/demo/images", params={"cluster": cluster, "folder": folder}
    ).json()
    assert {(i["cluster"], i["folder"]) for i in both["items"]} <= {(cluster, folder)}
    alone = labelled.get("/collections/demo/images", params={"cluster": cluster}).json()
    assert both["total"] == sum(i["folder"] == folder for i in alone["items"])
    nothing = labelled.get("/collections/demo/images", params={"category": "nosuch"}).json()
    assert nothing["total"] == 0 and nothing["items"] == []


def test_uploads_keep_the_names_people_gave_them(labelled: TestClient) -> None:
    photo = (SAMPLE / "queries" / "query_panda.jpg").read_bytes()
    added = labelled.post("/collections/demo/images", files={"files": ("my holiday.jpg", photo)})
    assert added.status_code == 201
    again = labelled.post("/collections/demo/images", files={"files": ("other.jpg", photo)})
    assert again.json()["results"][0]["status"] == "unchanged"
    image_id = added.json()["results"][0]["id"]
    stored = Path(added.json()["results"][0]["path"])

    newest = labelled.get("/collections/demo/images", params={"limit": 1}).json()["items"][0]
    assert (newest["id"], newest["name"], newest["folder"]) == (
        image_id,
        "my holiday.jpg",  # the first name it was uploaded under
        "uploaded",
    )
    uploaded = labelled.get("/collections/demo/images", params={"folder": "uploaded"}).json()
    assert [i["id"] for i in uploaded["items"]] == [image_id]

    found = labelled.post(
        "/collections/demo/search", params={"k": 1}, files={"file": ("q.jpg", photo)}
    ).json()["results"][0]
    assert (found["id"], found["name"], found["folder"]) == (image_id, "my holiday.jpg", "uploaded")
    similar = labelled.get(f"/collections/demo/images/{image_id}/similar").json()
    assert (similar["query_name"], similar["query_folder"]) == ("my holiday.jpg", "uploaded")

    kept_beside = [p for p in stored.parent.iterdir() if p != stored]
    assert [p.read_text() for p in kept_beside] == ["my holiday.jpg"]
    assert labelled.delete(f"/collections/demo/images/{image_id}").status_code == 204
    assert list(stored.parent.iterdir()) == []  # the file and its name are gone together


def test_the_preview_is_a_read_open_without_the_token(tmp_path: Path) -> None:
    settings = ServiceSettings(collections_dir=tmp_path / "collections", token="s3cret")
    photo = (SAMPLE / "queries" / "query_panda.jpg").read_bytes()
    with TestClient(create_app(settings)) as reader:
        answer = reader.post("/preview", files={"file": ("panda.jpg", photo)})
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        made = reader.post("/collections", json={"name": "x"})  # a write still needs it
        assert made.status_code == 401
