"""The HTTP API of ``lookalike serve``: collections, uploads, jobs, search, images, safety."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Collection
from lookalike.cli import main
from lookalike.encode.models import builtin_spec
from lookalike.service import (
    Job,
    Jobs,
    ServiceSettings,
    create_app,
    is_loopback,
    read_token,
    serve,
)
from tests.conftest import SAMPLE, make_image
from tests.live_server import live_server

MAX_UPLOAD = 1_000_000
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A root folder of photos, a folder outside it, and an indexed ``demo`` collection given
    as --db (the sample photos: 30 images, six categories)."""
    base = tmp_path_factory.mktemp("service")
    root = base / "root"
    shutil.copytree(SAMPLE / "collection", root / "photos")
    outside = base / "outside"
    make_image(outside / "secret.jpg", seed=99)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    db = base / "demo.db"
    with Collection.open(db) as demo:
        demo.add([root / "photos"])
    return {"base": base, "root": root, "outside": outside, "db": db}


@pytest.fixture(scope="module")
def client(world: dict[str, Path]) -> Iterator[TestClient]:
    settings = ServiceSettings(
        collections_dir=world["base"] / "collections",
        db=world["db"],
        roots=[world["root"]],
        max_upload_bytes=MAX_UPLOAD,
        max_upload_pixels=MAX_PIXELS,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def fresh(client: TestClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty collection named after the test; deleted afterwards."""
    name = request.node.name.replace("[", "-").replace("]", "")[:64]
    assert client.post("/collections", json={"name": name}).status_code == 201
    yield name
    client.delete(f"/collections/{name}")


def jpeg_bytes(path: Path = SAMPLE / "queries" / "query_panda.jpg") -> bytes:
    return path.read_bytes()


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def wait_for_job(client: TestClient, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


# --- service ---------------------------------------------------------------------------------


def test_health_page_and_docs(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["default_collection"] == "demo"
    assert health["models_loaded"] == ["efficientnet-lite0"]  # loaded once, at start
    assert health["writes_need_token"] is False
    assert health["server_paths"] is True

    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="file"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200

    docs = client.get("/docs")
    assert docs.status_code == 200
    # Swagger UI is served from the installed package, not a CDN: /docs works offline
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    bundle = client.get("/docs-assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    spec = client.get("/openapi.json").json()
    for path in (
        "/collections",
        "/collections/{name}",
        "/collections/{name}/search",
        "/collections/{name}/images",
        "/collections/{name}/images/{image_id}",
        "/collections/{name}/images/{image_id}/thumbnail",
        "/collections/{name}/images/{image_id}/similar",
        "/collections/{name}/jobs/index",
        "/collections/{name}/categories",
        "/collections/{name}/clusters",
        "/jobs/{job_id}",
        "/health",
        "/metrics",
    ):
        assert path in spec["paths"], path


# --- collections -----------------------------------------------------------------------------


def test_collections_crud(client: TestClient) -> None:
    listed = client.get("/collections").json()
    assert listed["default"] == "demo"
    demo = next(c for c in listed["collections"] if c["name"] == "demo")
    assert demo == {
        "name": "demo",
        "images": 30,
        "model": "efficientnet-lite0",
        "default": True,
        "deletable": False,
        "skipped": 0,
    }

    created = client.post("/collections", json={"name": "shop_2", "model": "lite0"})
    assert created.status_code == 201
    assert created.json()["images"] == 0
    assert client.post("/collections", json={"name": "shop_2"}).status_code == 409
    assert client.get("/collections/shop_2").json()["name"] == "shop_2"
    assert "shop_2" in [c["name"] for c in client.get("/collections").json()["collections"]]

    for bad in ("../x", "a b", "x.db", "", "é", "a" * 65):
        response = client.post("/collections", json={"name": bad})
        assert response.status_code == 422, bad
    assert (
        client.post("/collections", json={"name": "m", "model": "/tmp/x.onnx"}).status_code == 422
    )

    assert client.delete("/collections/shop_2").status_code == 204
    assert client.get("/collections/shop_2").status_code == 404
    assert client.delete("/collections/shop_2").status_code == 404
    assert client.get("/collections/nope").json() == {"detail": "no collection 'nope'"}
    # The --db collection is the user's file: never deleted over HTTP.
    assert client.delete("/collections/demo").status_code == 403
    assert client.get("/collections/demo").status_code == 200


def test_categories_and_clusters_answer_even_when_empty(client: TestClient) -> None:
    categories = client.get("/collections/demo/categories")
    assert categories.status_code == 200
    assert isinstance(categories.json()["categories"], dict)
    clusters = client.get("/collections/demo/clusters")
    assert clusters.status_code == 200
    assert isinstance(clusters.json()["clusters"], dict)
    assert client.get("/collections/nope/categories").status_code == 404


# --- searching -------------------------------------------------------------------------------


def test_search_by_upload(client: TestClient) -> None:
    found = client.post(
        "/collections/demo/search", params={"k": 5}, files={"file": ("q.jpg", jpeg_bytes())}
    )
    assert found.status_code == 200, found.text
    body = found.json()
    results = body["results"]
    assert len(results) == 5
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert sum("/panda/" in r["path"] for r in results) >= 4
    top = results[0]
    assert top["image_url"] == f"/collections/demo/images/{top['id']}"
    assert top["thumbnail_url"].endswith("/thumbnail")
    assert body["query_id"] is None

    threshold = scores[2] - 1e-5  # scores are rounded to 6 decimals
    kept = client.post(
        "/collections/demo/search",
        params={"k": 30, "min_score": threshold},
        files={"file": ("q.jpg", jpeg_bytes())},
    ).json()["results"]
    assert kept and all(r["score"] >= threshold for r in kept)
    assert len(kept) == 3
    nothing = client.post(
        "/collections/demo/search",
        params={"min_score": 0.999},
        files={"file": ("q.jpg", jpeg_bytes())},
    )
    assert nothing.json()["results"] == []


def test_search_localizing_the_query(client: TestClient) -> None:
    """localize=crop finds the object in a scene photo: the box comes back, and the
    results are those of the object."""
    panda = Image.open(SAMPLE / "queries" / "query_panda.jpg").convert("RGB")
    scene = Image.new("RGB", (640, 640), (128, 128, 128))
    scene.paste(panda.resize((260, 200)), (360, 420))
    buffer = io.BytesIO()
    scene.save(buffer, "JPEG")
    found = client.post(
        "/collections/demo/search",
        params={"k": 5, "localize": "crop"},
        files={"file": ("scene.jpg", buffer.getvalue())},
    )
    assert found.status_code == 200, found.text
    body = found.json()
    x0, y0, x1, y1 = body["query_box"]
    assert (x0 + x1) / 2 > 0.5 and (y0 + y1) / 2 > 0.5
    assert sum("/panda/" in r["path"] for r in body["results"]) >= 4
    bad = client.post(
        "/collections/demo/search",
        params={"localize": "sideways"},
        files={"file": ("scene.jpg", buffer.getvalue())},
    )
    assert bad.status_code == 422


def framed_on_a_wall(photo: Path) -> bytes:
    """A print of ``photo`` in a dark frame on a big plain wall (JPEG bytes)."""
    wall = Image.new("RGB", (900, 700), (214, 206, 190))
    frame = Image.new("RGB", (340, 260), (40, 30, 25))
    frame.paste(Image.open(photo).convert("RGB").resize((300, 220)), (20, 20))
    wall.paste(frame, (280, 220))
    return encoded(wall, "JPEG")


@pytest.mark.parametrize("descriptor", [{}, {"pooling": "gem", "localize": "mask"}])
@pytest.mark.parametrize("query", ["clean", "framed"])
def test_upload_search_matches_the_library(
    tmp_path: Path, descriptor: dict[str, str], query: str
) -> None:
    """The server's batched query path gives what Collection.search gives, whatever the
    collection's descriptor (pooling, localization) is: a framed photo on a plain wall too,
    which the library also searches by the object cut from it (its box comes back)."""
    spec = dataclasses.replace(builtin_spec("lite0"), **descriptor)  # type: ignore[arg-type]
    db = tmp_path / "lib.db"
    data = (
        jpeg_bytes()
        if query == "clean"
        else framed_on_a_wall(SAMPLE / "collection" / "sunflower" / "image_0003.jpg")
    )
    with Collection.open(db, model=spec) as collection:
        collection.add([SAMPLE / "collection"])
        (expected,) = collection.search_detailed([data], k=8)
    if query == "framed" and not descriptor:
        assert expected.query_box is not None  # the frame was found
    settings = ServiceSettings(collections_dir=tmp_path / "c", db=db)
    with TestClient(create_app(settings)) as api:
        found = api.post(
            "/collections/lib/search", params={"k": 8}, files={"file": ("q.jpg", data)}
        )
    body = found.json()
    results = body["results"]
    assert [r["id"] for r in results] == [hit.id for hit in expected.results]
    assert [r["score"] for r in results] == pytest.approx(
        [hit.score for hit in expected.results], abs=1e-4
    )
    assert body["query_box"] == pytest.approx(expected.query_box, abs=1e-6)


def test_search_options_are_validated(client: TestClient) -> None:
    upload = {"file": ("q.jpg", jpeg_bytes())}
    for params in ({"k": 0}, {"k": 1000}, {"min_score": 2}, {"k": "x"}):
        response = client.post("/collections/demo/search", params=params, files=upload)
        assert response.status_code == 422, params
    assert client.post("/collections/demo/search", files={}).status_code == 422
    response = client.post("/collections/nope/search", files=upload)
    assert response.status_code == 404


def test_more_like_this_by_id(client: TestClient) -> None:
    panda = next(
        r
        for r in client.get("/collections/demo/images", params={"limit": 100}).json()["items"]
        if "/panda/" in r["path"]
    )
    found = client.get(f"/collections/demo/images/{panda['id']}/similar", params={"k": 4})
    assert found.status_code == 200
    body = found.json()
    assert body["query_id"] == panda["id"]
    ids = [r["id"] for r in body["results"]]
    assert len(ids) == 4
    assert panda["id"] not in ids  # itself excluded
    assert sum("/panda/" in r["path"] for r in body["results"]) >= 3
    everything = client.get(f"/collections/demo/images/{panda['id']}/similar", params={"k": 200})
    assert len(everything.json()["results"]) == 29

    high = body["results"][1]["score"] - 1e-5
    kept = client.get(
        f"/collections/demo/images/{panda['id']}/similar", params={"min_score": high}
    ).json()["results"]
    assert [r["id"] for r in kept] == ids[:2]

    assert client.get("/collections/demo/images/99999/similar").status_code == 404
    assert client.get("/collections/demo/images/0/similar").status_code == 422


def test_search_by_category_is_accepted_or_clearly_refused(client: TestClient) -> None:
    response = client.post(
        "/collections/demo/search",
        params={"by_category": True, "k": 3},
        files={"file": ("q.jpg", jpeg_bytes())},
    )
    # 200 once collections can search by category; before that a clear 400, never a 500.
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert len(response.json()["results"]) <= 3


# --- bad uploads -----------------------------------------------------------------------------


def test_bad_search_uploads_get_clear_4xx(client: TestClient, tmp_path: Path) -> None:
    def search(data: bytes, name: str = "x.jpg") -> httpx.Response:
        return client.post("/collections/demo/search", files={"file": (name, data)})

    not_image = search(b"%PDF-1.4 this is not an image at all", "cv.pdf")
    assert not_image.status_code == 415
    assert not_image.json() == {"detail": "cv.pdf: not a recognised image"}

    assert search(b"").status_code == 415
    truncated = search(jpeg_bytes()[:4000])
    assert truncated.status_code == 422
    assert "truncated" in truncated.json()["detail"]

    too_big = search(b"\xff" * (MAX_UPLOAD + 1))
    assert too_big.status_code == 413
    assert "too large" in too_big.json()["detail"]

    # A small file with too many pixels (decompression bomb) is refused from its header.
    huge = encoded(Image.new("L", (2100, 2100)), "PNG")
    assert len(huge) < MAX_UPLOAD
    response = search(huge, "huge.png")
    assert response.status_code == 413
    assert "image too large" in response.json()["detail"]


def test_request_body_limit_applies_while_reading(client: TestClient) -> None:
    # Declared too large: refused before the body is read.
    response = client.post(
        "/collections/demo/search",
        content=b"x" * 10,
        headers={"content-length": str(10**9), "content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413

    # Streamed without a length: counted as it arrives, refused once past the limit.
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(40):
            yield b"\xff" * 65536

    response = client.post(
        "/collections/demo/search",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


# --- adding and removing ---------------------------------------------------------------------


def test_add_by_upload(client: TestClient, fresh: str, tmp_path: Path) -> None:
    photo = SAMPLE / "collection" / "panda" / "image_0002.jpg"
    noise_png = encoded(Image.open(make_image(tmp_path / "n.png", seed=3, fmt="PNG")), "PNG")
    response = client.post(
        f"/collections/{fresh}/images",
        files=[("files", ("panda.jpg", photo.read_bytes())), ("files", ("n.png", noise_png))],
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["added"] == 2
    assert [r["status"] for r in report["results"]] == ["added", "added"]
    assert all(r["id"] for r in report["results"])
    stored = Path(report["results"][0]["path"])
    assert stored.name.endswith(".jpg") and len(stored.stem) == 64  # sha256 + decoded suffix
    assert stored.read_bytes() == photo.read_bytes()
    assert client.get(f"/collections/{fresh}").json()["images"] == 2

    again = client.post(
        f"/collections/{fresh}/images", files=[("files", ("again.jpg", photo.read_bytes()))]
    )
    assert again.status_code == 200
    assert again.json()["results"][0]["status"] == "unchanged"
    assert again.json()["results"][0]["id"] == report["results"][0]["id"]

    # The uploaded photo is now found by itself.
    hit = client.post(
        f"/collections/{fresh}/search", files={"file": ("q.jpg", photo.read_bytes())}
    ).json()["results"][0]
    assert hit["id"] == report["results"][0]["id"]
    assert hit["score"] > 0.99


def test_webp_named_jpg_is_stored_and_served_as_webp(client: TestClient, fresh: str) -> None:
    webp = encoded(Image.open(SAMPLE / "collection" / "cup" / "image_0002.jpg"), "WEBP")
    response = client.post(f"/collections/{fresh}/images", files={"files": ("cup.jpg", webp)})
    assert response.status_code == 201
    outcome = response.json()["results"][0]
    assert outcome["path"].endswith(".webp")
    served = client.get(f"/collections/{fresh}/images/{outcome['id']}")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/webp"
    assert served.content == webp


def test_bad_upload_changes_nothing(client: TestClient, fresh: str) -> None:
    good = ("files", ("good.jpg", jpeg_bytes()))
    files_dir = client.app.state.service.collections.files_dir(fresh)  # type: ignore[attr-defined]

    bad = client.post(
        f"/collections/{fresh}/images", files=[good, ("files", ("notes.jpg", b"hello world"))]
    )
    assert bad.status_code == 415
    assert bad.json()["detail"] == "notes.jpg: not a recognised image"

    too_big = client.post(
        f"/collections/{fresh}/images",
        files=[good, ("files", ("big.jpg", jpeg_bytes() + b"\0" * MAX_UPLOAD))],
    )
    assert too_big.status_code == 413

    corrupt = bytearray(jpeg_bytes())
    corrupt[600:4000] = b"\x00" * 3400
    response = client.post(
        f"/collections/{fresh}/images", files=[good, ("files", ("c.jpg", bytes(corrupt)))]
    )
    assert response.status_code in (415, 422)

    assert client.get(f"/collections/{fresh}").json()["images"] == 0
    assert not files_dir.exists() or not any(p.is_file() for p in files_dir.rglob("*"))


def test_remove_image(client: TestClient, fresh: str) -> None:
    added = client.post(
        f"/collections/{fresh}/images", files={"files": ("p.jpg", jpeg_bytes())}
    ).json()["results"][0]
    path = Path(added["path"])
    assert path.is_file()
    assert client.delete(f"/collections/{fresh}/images/{added['id']}").status_code == 204
    assert not path.exists()
    assert client.get(f"/collections/{fresh}/images/{added['id']}").status_code == 404
    assert client.delete(f"/collections/{fresh}/images/{added['id']}").status_code == 404
    assert client.get(f"/collections/{fresh}").json()["images"] == 0


def test_delete_collection_removes_its_uploads(client: TestClient) -> None:
    client.post("/collections", json={"name": "doomed"})
    added = client.post(
        "/collections/doomed/images", files={"files": ("p.jpg", jpeg_bytes())}
    ).json()["results"][0]
    assert Path(added["path"]).is_file()
    assert client.delete("/collections/doomed").status_code == 204
    assert not Path(added["path"]).exists()


# --- images ----------------------------------------------------------------------------------


def test_image_and_thumbnail_by_id(client: TestClient) -> None:
    page = client.get("/collections/demo/images", params={"limit": 1}).json()
    item = page["items"][0]
    original = client.get(item["image_url"])
    assert original.status_code == 200
    assert original.headers["content-type"] == "image/jpeg"
    assert original.content == Path(item["path"]).read_bytes()

    thumb = client.get(item["thumbnail_url"])
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert "max-age" in thumb.headers["cache-control"]
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "JPEG" and max(image.size) <= 256
    again = client.get(item["thumbnail_url"], headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status_code == 304

    for url in (
        "/collections/demo/images/99999",
        "/collections/demo/images/99999/thumbnail",
        "/collections/nope/images/1",
    ):
        assert client.get(url).status_code == 404, url
    # Ids only: anything path-like is not an id.
    for url in (
        "/collections/demo/images/..%2F..%2Fetc%2Fpasswd",
        "/collections/demo/images/%2Fetc%2Fpasswd/thumbnail",
        "/collections/demo/images/1.jpg",
        "/collections/..%2Fdemo/images/1",
    ):
        assert client.get(url).status_code in (404, 422), url


def test_browse_pages(client: TestClient) -> None:
    first = client.get("/collections/demo/images", params={"limit": 7}).json()
    assert first["total"] == 30
    assert len(first["items"]) == 7
    ids = [i["id"] for i in first["items"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    rest = client.get("/collections/demo/images", params={"offset": 7, "limit": 100}).json()
    assert len(rest["items"]) == 23
    assert not set(ids) & {i["id"] for i in rest["items"]}
    assert client.get("/collections/demo/images", params={"limit": 0}).status_code == 422


# --- jobs ------------------------------------------------------------------------------------


def test_index_job_reports_progress(client: TestClient, fresh: str, world: dict[str, Path]) -> None:
    folder = world["root"] / "photos"
    started = client.post(f"/collections/{fresh}/jobs/index", json={"paths": [str(folder)]})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["state"] in ("queued", "running") and job["collection"] == fresh
    seen_progress: list[int] = []
    while job["state"] in ("queued", "running"):
        seen_progress.append(job["done"])
        time.sleep(0.02)
        job = client.get(f"/jobs/{job['id']}").json()
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == 30
    assert seen_progress == sorted(seen_progress)
    assert job["report"]["added"] == 30 and job["report"]["skipped"] == []
    assert client.get(f"/collections/{fresh}").json()["images"] == 30
    assert job["id"] in [j["id"] for j in client.get("/jobs").json()["jobs"]]

    # Re-running finds nothing to do.
    again = client.post(f"/collections/{fresh}/jobs/index", json={"paths": [str(folder)]})
    rerun = wait_for_job(client, again.json()["id"])
    assert rerun["report"]["unchanged"] == 30 and rerun["total"] == 0

    assert client.get("/jobs/nope").status_code == 404


def test_server_paths_only_inside_roots(
    client: TestClient, fresh: str, world: dict[str, Path]
) -> None:
    root = world["root"]

    def start(path: str) -> httpx.Response:
        return client.post(f"/collections/{fresh}/jobs/index", json={"paths": [path]})

    for outside in (
        "/etc",
        str(world["outside"]),
        str(world["outside"] / "secret.jpg"),
        f"{root}/../outside",
        f"{root}/photos/../../outside/secret.jpg",
        str(root / "escape"),  # a link inside the root to a folder outside it
        str(root / "escape" / "secret.jpg"),
        "/",
    ):
        response = start(outside)
        assert response.status_code == 403, outside
        assert "outside the allowed roots" in response.json()["detail"]
    assert start("photos").status_code == 422  # relative: refused, not resolved
    assert start(str(root / "missing")).status_code == 404
    assert client.post(f"/collections/{fresh}/jobs/index", json={"paths": []}).status_code == 422
    assert client.get(f"/collections/{fresh}").json()["images"] == 0


def test_links_to_files_outside_roots_are_not_indexed(
    client: TestClient, fresh: str, world: dict[str, Path]
) -> None:
    folder = world["root"] / "mixed"
    make_image(folder / "inside.jpg", seed=5)
    (folder / "leak.jpg").symlink_to(world["outside"] / "secret.jpg")
    job = wait_for_job(
        client,
        client.post(f"/collections/{fresh}/jobs/index", json={"paths": [str(folder)]}).json()["id"],
    )
    assert job["state"] == "done"
    assert job["report"]["added"] == 1
    assert job["report"]["skipped"] == [
        {"path": str(folder / "leak.jpg"), "reason": "outside the allowed roots"}
    ]
    items = client.get(f"/collections/{fresh}/images").json()["items"]
    assert [Path(i["path"]).name for i in items] == ["inside.jpg"]


def test_no_roots_no_server_paths(tmp_path: Path) -> None:
    app = create_app(ServiceSettings(collections_dir=tmp_path, warm_up=False))
    with TestClient(app) as plain:
        plain.post("/collections", json={"name": "c"})
        response = plain.post("/collections/c/jobs/index", json={"paths": [str(tmp_path)]})
        assert response.status_code == 403
        assert "--root" in response.json()["detail"]
        assert plain.get("/health").json()["server_paths"] is False


def test_job_queue_runs_in_order_and_cancels() -> None:
    gate = threading.Event()
    ran: list[str] = []

    def run(job: Job) -> dict[str, object]:
        gate.wait(10)
        ran.append(job.id)
        return {"ok": True}

    jobs = Jobs(run)
    try:
        first = jobs.submit(Job(collection="c", paths=["a"], resolved=["a"]))
        second = jobs.submit(Job(collection="c", paths=["b"], resolved=["b"]))
        third = jobs.submit(Job(collection="c", paths=["c"], resolved=["c"]))
        jobs.cancel(second)
        assert jobs.active_for("c")
        gate.set()
        deadline = time.monotonic() + 10
        while third.state != "done" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ran == [first.id, third.id]
        assert second.state == "cancelled"
        assert first.report == {"ok": True} and first.finished is not None
        assert not jobs.active_for("c")
    finally:
        jobs.close()


def test_deleting_a_collection_with_a_running_job_is_refused(
    client: TestClient, world: dict[str, Path]
) -> None:
    jobs = client.app.state.service.jobs  # type: ignore[attr-defined]
    gate = threading.Event()
    run = jobs._run

    def held(job: Job) -> dict[str, object]:
        gate.wait(30)
        return run(job)

    jobs._run = held
    try:
        client.post("/collections", json={"name": "busy"})
        job = client.post(
            "/collections/busy/jobs/index", json={"paths": [str(world["root"] / "photos")]}
        ).json()
        response = client.delete("/collections/busy")
        assert response.status_code == 409
        assert "job" in response.json()["detail"]
        gate.set()
        assert wait_for_job(client, job["id"])["state"] == "done"
    finally:
        gate.set()
        jobs._run = run
    assert client.delete("/collections/busy").status_code == 204


def test_cancel_a_queued_job(client: TestClient, fresh: str, world: dict[str, Path]) -> None:
    jobs = client.app.state.service.jobs  # type: ignore[attr-defined]
    gate = threading.Event()
    run = jobs._run

    def held(job: Job) -> dict[str, object]:
        gate.wait(30)
        return run(job)

    jobs._run = held
    try:
        body = {"paths": [str(world["root"] / "photos")]}
        first = client.post(f"/collections/{fresh}/jobs/index", json=body).json()
        second = client.post(f"/collections/{fresh}/jobs/index", json=body).json()
        cancelled = client.delete(f"/jobs/{second['id']}")
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        gate.set()
        assert wait_for_job(client, first["id"])["state"] == "done"
        final = client.get(f"/jobs/{second['id']}").json()
        assert final["state"] == "cancelled" and final["started"] is None
    finally:
        gate.set()
        jobs._run = run
    assert client.delete("/jobs/nope").status_code == 404


def test_too_many_files_in_one_upload(tmp_path: Path) -> None:
    settings = ServiceSettings(collections_dir=tmp_path, max_files_per_request=2, warm_up=False)
    with TestClient(create_app(settings)) as api:
        api.post("/collections", json={"name": "c"})
        files = [("files", (f"{i}.jpg", jpeg_bytes())) for i in range(3)]
        response = api.post("/collections/c/images", files=files)
        assert response.status_code == 413
        assert response.json()["detail"] == "too many files: limit is 2"
        assert api.get("/collections/c").json()["images"] == 0


# --- safety ----------------------------------------------------------------------------------


def test_token_required_for_writes_not_reads(tmp_path: Path) -> None:
    settings = ServiceSettings(collections_dir=tmp_path, token="s3cret-token", warm_up=False)
    with TestClient(create_app(settings)) as api:
        good = {"Authorization": "Bearer s3cret-token"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            response = api.post("/collections", json={"name": "c"}, headers=headers)
            assert response.status_code == 401
            assert response.json() == {"detail": "missing or wrong API token"}
            assert response.headers["www-authenticate"] == "Bearer"
        for headers in ({"Authorization": "Bearer s3cret-token2"}, {"Authorization": "Bearer "}):
            assert api.post("/collections", json={"name": "c"}, headers=headers).status_code == 401
        lower = {"Authorization": "bearer s3cret-token"}  # the scheme is case-insensitive
        assert api.post("/collections", json={"name": "c"}, headers=lower).status_code == 201
        assert api.delete("/collections/c", headers=good).status_code == 204
        assert api.post("/collections", json={"name": "c"}, headers=good).status_code == 201

        upload = {"files": ("p.jpg", jpeg_bytes())}
        assert api.post("/collections/c/images", files=upload).status_code == 401
        assert api.post("/collections/c/images", files=upload, headers=good).status_code == 201
        assert api.delete("/collections/c/images/1").status_code == 401
        assert api.delete("/jobs/x").status_code == 401
        assert api.post("/collections/c/jobs/index", json={"paths": ["/"]}).status_code == 401

        # Reads, and searching by upload, need no token.
        assert api.get("/collections").status_code == 200
        assert api.get("/collections/c/images/1/thumbnail").status_code == 200
        assert api.get("/health").json()["writes_need_token"] is True
        search = api.post("/collections/c/search", files={"file": ("q.jpg", jpeg_bytes())})
        assert search.status_code == 200
        assert search.json()["results"][0]["score"] > 0.99

        assert api.delete("/collections/c").status_code == 401
        assert api.delete("/collections/c", headers=good).status_code == 204


def test_cross_site_browser_writes_refused(client: TestClient) -> None:
    body = {"name": "xsite"}
    evil = client.post("/collections", json=body, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    fetch = client.post("/collections", json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetch.status_code == 403
    assert client.get("/collections/xsite").status_code == 404
    same = client.post("/collections", json=body, headers={"Origin": "http://testserver"})
    assert same.status_code == 201
    client.delete("/collections/xsite")


def test_only_local_host_names_when_serving_locally(tmp_path: Path) -> None:
    settings = ServiceSettings(
        collections_dir=tmp_path, allowed_hosts=["127.0.0.1", "localhost"], warm_up=False
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as api:
        assert api.get("/health").status_code == 200
        rebound = api.get("/health", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400


def test_public_address_needs_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.1.2.3") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("example.com") and not is_loopback("::")
    with pytest.raises(ValueError, match="without an API token"):
        serve(ServiceSettings(collections_dir=tmp_path), host="0.0.0.0")
    code = main(["serve", "--host", "0.0.0.0", "--collections", str(tmp_path)])
    assert code == 2
    assert "--insecure-public" in capsys.readouterr().err


def test_token_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOKALIKE_TOKEN", raising=False)
    assert read_token(None) is None
    monkeypatch.setenv("LOOKALIKE_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert read_token(token_file) == "from-file"
    token_file.write_text("  \n")
    with pytest.raises(ValueError, match="holds no token"):
        read_token(token_file)


# --- metrics ---------------------------------------------------------------------------------


def test_metrics(client: TestClient) -> None:
    client.post("/collections/demo/search", files={"file": ("q.jpg", jpeg_bytes())})
    client.get("/collections/demo/images/99999")
    text = client.get("/metrics")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    body = text.text
    assert "# TYPE lookalike_http_requests_total counter" in body
    assert (
        'lookalike_http_requests_total{method="POST",route="/collections/{name}/search",'
        'status="200"}' in body
    )
    assert (
        'lookalike_http_requests_total{method="GET",route="/collections/{name}/images/{image_id}",'
        'status="404"}' in body
    )
    assert (
        'lookalike_http_request_duration_seconds_bucket{route="/collections/{name}/search",'
        'le="+Inf"}' in body
    )
    assert 'lookalike_jobs{state="queued"}' in body
    assert 'lookalike_search_queue{model="efficientnet-lite0"} 0' in body
    assert 'lookalike_images{collection="demo"} 30' in body
    assert "lookalike_http_requests_in_flight 1" in body


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_searches_while_indexing(world: dict[str, Path], tmp_path: Path) -> None:
    """Searches by upload and by id from several clients, on a real server, while a job adds
    images to the collection being searched: every answer is a correct 200."""
    folder = world["root"] / "many"
    for i in range(80):
        make_image(folder / f"{i:03}.jpg", seed=1000 + i, size=(320, 240))
    shutil.copytree(world["root"] / "photos", folder / "photos")
    settings = ServiceSettings(collections_dir=tmp_path / "c", roots=[world["root"]])
    with live_server(create_app(settings)) as base:
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.post("/collections", json={"name": "busy"}).status_code == 201
            first = http.post(
                "/collections/busy/images", files={"files": ("p.jpg", jpeg_bytes())}
            ).json()["results"][0]["id"]
            job = http.post("/collections/busy/jobs/index", json={"paths": [str(folder)]}).json()

        def client_loop(n: int) -> list[str]:
            problems: list[str] = []
            with httpx.Client(base_url=base, timeout=60) as http:
                while True:
                    if n % 2:
                        r = http.post(
                            "/collections/busy/search",
                            params={"k": 5},
                            files={"file": ("q.jpg", jpeg_bytes())},
                        )
                    else:
                        r = http.get(f"/collections/busy/images/{first}/similar")
                    if r.status_code != 200:
                        problems.append(f"{r.status_code} {r.text}")
                        continue
                    results = r.json()["results"]
                    scores = [hit["score"] for hit in results]
                    if scores != sorted(scores, reverse=True) or len(results) > 10:
                        problems.append(f"bad results {results}")
                    state = http.get(f"/jobs/{job['id']}").json()["state"]
                    if state not in ("queued", "running"):
                        return problems

        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(client_loop, range(4)))
        with httpx.Client(base_url=base, timeout=60) as http:
            final = http.get(f"/jobs/{job['id']}").json()
            assert final["state"] == "done", final
            assert final["report"]["added"] == 110
            assert http.get("/collections/busy").json()["images"] == 111
            top = http.post(
                "/collections/busy/search", files={"file": ("q.jpg", jpeg_bytes())}
            ).json()["results"][0]
            assert top["id"] == first and top["score"] > 0.99
    assert outcomes == [[], [], [], []]


def test_cli_has_serve() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0


def test_uploads_dir_is_next_to_db(world: dict[str, Path], client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    assert service.collections.files_dir("demo") == world["db"].with_suffix(".files")
    with pytest.raises(KeyError):
        service.collections.files_dir("nope")
    assert os.path.isabs(str(service.collections.folder))
