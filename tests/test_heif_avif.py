"""Phone photos: HEIC/HEIF (pillow-heif) and AVIF (Pillow) are decoded by content, picked up by
``index``, searchable, and served; the files are encoded here, by the test, for real."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Collection
from lookalike.image.decode import load_image
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE

FORMATS = [("HEIF", ".heic"), ("AVIF", ".avif")]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, quality=90, **options)
    data = out.getvalue()
    brand = {"HEIF": b"ftypheic", "AVIF": b"ftypavif"}[fmt]
    assert data[4:12] == brand  # a real HEIC/AVIF file, not a renamed JPEG
    return data


def halves() -> Image.Image:
    """Left half blue, right half red: orientation and colours can be checked."""
    image = Image.new("RGB", (120, 60), (230, 20, 20))
    image.paste((20, 20, 230), (0, 0, 60, 60))
    return image


@pytest.mark.parametrize(("fmt", "_suffix"), FORMATS)
def test_decoded_by_content_with_orientation(fmt: str, _suffix: str) -> None:
    plain = load_image(encode(halves(), fmt))
    assert plain.mode == "RGB" and plain.size == (120, 60)
    left, right = np.asarray(plain)[30, 10], np.asarray(plain)[30, 110]
    assert left[2] > 200 > left[0] and right[0] > 200 > right[2]

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to show"
    turned = load_image(encode(halves(), fmt, exif=exif.tobytes()))
    assert turned.size == (60, 120)
    assert np.asarray(turned)[5, 30][2] > 200  # the blue left half is now on top


def test_a_folder_of_phone_photos_is_indexed_and_searched(photos: Path, tmp_path: Path) -> None:
    panda = sorted((photos / "panda").glob("*.jpg"))[0]
    phone = tmp_path / "phone"
    phone.mkdir()
    with Image.open(panda) as original:
        (phone / "IMG_0001.HEIC").write_bytes(encode(original.convert("RGB"), "HEIF"))
        (phone / "IMG_0002.avif").write_bytes(encode(original.convert("RGB"), "AVIF"))
        (phone / "IMG_0003.heif").write_bytes(encode(halves(), "HEIF"))
    (phone / "IMG_0001.AAE").write_text("<plist/>")  # the sidecar iPhones write
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos])
        report = collection.add([phone])
        assert (report.added, report.skipped) == (3, [])
        assert report.left_out == {".aae": 1}
        # the HEIC and AVIF copies of a panda photo find it (and each other) first
        for name in ("IMG_0001.HEIC", "IMG_0002.avif"):
            top = collection.search(phone / name, k=2)
            assert {Path(hit.path).name for hit in top} == {panda.name} | (
                {"IMG_0001.HEIC", "IMG_0002.avif"} - {name}
            )
            assert all(hit.score > 0.9 for hit in top)


@pytest.mark.parametrize(("fmt", "suffix"), FORMATS)
def test_served_searched_uploaded_and_thumbnailed(tmp_path: Path, fmt: str, suffix: str) -> None:
    shutil.copytree(SAMPLE / "collection", tmp_path / "photos")
    db = tmp_path / "demo.db"
    with Collection.open(db) as demo:
        demo.add([tmp_path / "photos"])
    query = encode(Image.open(SAMPLE / "queries" / "query_panda.jpg").convert("RGB"), fmt)
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db)
    with TestClient(create_app(settings)) as client:
        found = client.post(
            "/collections/demo/search", params={"k": 3}, files={"file": (f"q{suffix}", query)}
        )
        assert found.status_code == 200, found.text
        assert all("/panda/" in hit["path"] for hit in found.json()["results"])

        added = client.post("/collections/demo/images", files={"files": (f"p{suffix}", query)})
        assert added.status_code == 201, added.text
        outcome = added.json()["results"][0]
        assert outcome["status"] == "added" and outcome["path"].endswith(suffix)
        original = client.get(f"/collections/demo/images/{outcome['id']}")
        assert original.headers["content-type"] == f"image/{suffix[1:]}"
        thumbnail = client.get(f"/collections/demo/images/{outcome['id']}/thumbnail")
        assert thumbnail.status_code == 200
        assert Image.open(io.BytesIO(thumbnail.content)).format == "JPEG"
