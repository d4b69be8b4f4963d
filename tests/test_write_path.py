"""The one write path: uploads (HTTP), ``Collection.add``, and ``lookalike import`` commit the
same way, so the fitted models are refitted and the approximate index followed and saved
whichever door the images came through."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from PIL import Image

from lookalike import Collection
from lookalike.index import persistent as persistent_index
from lookalike.service import ServiceSettings, create_app
from lookalike.store.sqlite import Store
from tests.conftest import make_image
from tests.live_server import live_server

UPLOADS = 1000
PER_REQUEST = 20


def saved_cursor(db: Path) -> object:
    """The change cursor recorded in the approximate index saved beside ``db``."""
    header = json.loads(db.with_name(db.name + ".ann").read_text())
    return header["cursor"]


def store_cursor(db: Path) -> object:
    store = Store(db)
    try:
        return store.cursor()
    finally:
        store.close()


def noise_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def test_an_upload_burst_leaves_the_saved_approximate_index_current(tmp_path: Path) -> None:
    db = tmp_path / "burst.db"
    with Collection.open(db) as collection:
        collection.set_index("hnsw")  # the approximate index, however small the collection
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db, warm_up=False)
    requests = [
        [
            ("files", (f"{n:04}.jpg", noise_jpeg(n)))
            for n in range(start, min(start + PER_REQUEST, UPLOADS))
        ]
        for start in range(0, UPLOADS, PER_REQUEST)
    ]
    with live_server(create_app(settings)) as base:

        def upload(files: list[tuple[str, tuple[str, bytes]]]) -> int:
            with httpx.Client(base_url=base, timeout=120) as client:
                response = client.post("/collections/burst/images", files=files)
            assert response.status_code == 201, response.text
            return int(response.json()["added"])

        with ThreadPoolExecutor(4) as pool:
            added = sum(pool.map(upload, requests))
    assert added == UPLOADS
    with Collection.open(db, create=False) as collection:
        assert len(collection) == UPLOADS
        assert collection.index_kind() == "hnsw"
    assert saved_cursor(db) == store_cursor(db)


def test_add_and_import_leave_the_saved_approximate_index_current(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from lookalike.pipeline import parquet_io

    folder = tmp_path / "photos"
    for n in range(30):
        make_image(folder / f"{n:02}.jpg", seed=n)
    db = tmp_path / "doors.db"
    with Collection.open(db) as collection:
        collection.set_index("hnsw")
        collection.add([folder])
    assert saved_cursor(db) == store_cursor(db)

    exported = tmp_path / "more.parquet"
    more = tmp_path / "more"
    for n in range(30, 45):
        make_image(more / f"{n:02}.jpg", seed=n)
    with Collection.open(db) as collection:
        parquet_io.embed([more], exported, collection.spec)
        before = store_cursor(db)
        report = parquet_io.import_files(collection, [exported])  # the Python door, no CLI
        assert report.rows == 15
        assert len(collection) == 45
        # Written through the writer and followed by the index before import_files returns.
        assert persistent_index.path_for(collection.store).exists()
    assert store_cursor(db) != before
    assert saved_cursor(db) == store_cursor(db)
