"""Duplicate tiers and the copy to keep: on copies made here, through Python, the CLI and HTTP."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance

from lookalike import Collection, config
from lookalike.analysis.duplicate_tiers import (
    ImageFacts,
    choose_keeper,
    image_facts,
    near_pairs,
    pair_tier,
    tier_group,
)
from lookalike.cli import main
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE

ORIGINAL = SAMPLE / "collection" / "cup" / "image_0002.jpg"
OTHER_SHOT = SAMPLE / "collection" / "cup" / "image_0003.jpg"


def make_copies(folder: Path) -> dict[str, Path]:
    """The original photo and its copies: the same bytes, the same pixels as a PNG, a resized
    re-encode, a brighter one; and another photo of the same category."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"original": folder / "original.jpg", "other": folder / "other_shot.jpg"}
    shutil.copyfile(ORIGINAL, files["original"])
    shutil.copyfile(OTHER_SHOT, files["other"])
    os.utime(files["original"], ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    files["bytes"] = folder / "same_bytes.jpg"
    shutil.copyfile(ORIGINAL, files["bytes"])  # a later mtime than the original's
    with Image.open(ORIGINAL) as opened:
        image = opened.convert("RGB")
    files["pixels"] = folder / "same_pixels.png"
    image.save(files["pixels"])
    files["small"] = folder / "resized.jpg"
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(files["small"], quality=60)
    files["bright"] = folder / "brighter.jpg"
    ImageEnhance.Brightness(image).enhance(1.1).save(files["bright"], quality=60)
    return files


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("tiers")
    files = make_copies(root / "photos")
    db = root / "c.db"
    with Collection.open(db) as collection:
        collection.add([root / "photos"])
    return files, db


def test_jpeg_quality_is_read_from_the_tables(tmp_path: Path) -> None:
    image = Image.open(ORIGINAL).convert("RGB")
    for quality in (30, 50, 75, 90, 95):
        target = tmp_path / f"q{quality}.jpg"
        image.save(target, quality=quality)
        assert abs(image_facts(str(target)).jpeg_quality - quality) <= 2  # type: ignore[operator]
    assert image_facts(str(tmp_path / "q50.jpg")).format == "JPEG"


def test_tiers_of_generated_copies(copies: tuple[dict[str, Path], Path], tmp_path: Path) -> None:
    files, original_db = copies
    db = tmp_path / "c.db"
    shutil.copy(original_db, db)
    with Collection.open(db) as collection:
        groups = collection.duplicates()
    (group,) = groups  # the other shot is not a duplicate at the default threshold
    by_path = {m.path: m for m in group.members}
    assert set(by_path) == {
        str(files[k]) for k in ("original", "bytes", "pixels", "small", "bright")
    }
    assert group.tier == "near" and group.pictures == 1
    keeper = group.members[0]
    assert keeper.path == str(files["original"]) and keeper.keep and keeper.tier == "keep"
    assert by_path[str(files["bytes"])].tier == "exact"
    assert by_path[str(files["bytes"])].why == "exact copy: same bytes"
    assert by_path[str(files["pixels"])].tier == "exact"
    assert by_path[str(files["pixels"])].why == "exact copy: same pixels"
    for edited in ("small", "bright"):
        member = by_path[str(files[edited])]
        assert member.tier == "near" and not member.keep
        assert member.why.startswith("near copy: cosine")
    # review order: the keeper, its exact copies, then near ones
    assert [m.tier for m in group.members] == ["keep", "exact", "exact", "near", "near"]
    # against the next best (the brighter copy, re-saved at quality 60), and among the
    # same-pixel files the JPEG is the original (the PNG was converted from it)
    assert keeper.why == (
        "keep: least compressed (JPEG quality 75 against JPEG quality 60); "
        "original format (JPEG; the PNG copy has its pixels)"
    )


def test_an_exact_group_and_a_similar_group(tmp_path: Path) -> None:
    """Only exact copies: tier exact. Another shot forced into a group (a low threshold):
    tier similar, both pictures kept, nothing of the other shot suggested for removal."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copyfile(ORIGINAL, photos / "a.jpg")
    shutil.copyfile(ORIGINAL, photos / "a_copy.jpg")
    db = tmp_path / "c.db"
    with Collection.open(db) as collection:
        collection.add([photos])
        (group,) = collection.duplicates()
        assert group.tier == "exact" and [m.tier for m in group.members] == ["keep", "exact"]

    ids = (1, 2, 3)
    facts = [image_facts(str(p)) for p in (ORIGINAL, photos / "a_copy.jpg", OTHER_SHOT)]
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.95, np.sqrt(1 - 0.95**2)]], np.float32)
    tier, members = tier_group(ids, (1.0, 1.0, 0.95), facts, vectors)
    assert tier == "similar"
    assert [(m.tier, m.keep, m.picture) for m in members] == [
        ("keep", True, 0),
        ("exact", False, 0),
        ("similar", True, 1),
    ]
    assert {members[0].id, members[1].id} == {1, 2} and members[2].id == 3
    assert members[2].why.startswith("another shot (cosine 0.950, hash ")


def facts(path: str, **kw: object) -> ImageFacts:
    return ImageFacts(path, file_sha=path, pixels_sha=path, phash=0, **kw)  # type: ignore[arg-type]


def test_the_copy_to_keep() -> None:
    big = facts("big.jpg", width=400, height=300, format="JPEG", jpeg_quality=50, bytes=9000)
    small = facts("small.png", width=200, height=150, format="PNG", bytes=90_000)
    assert choose_keeper([small, big]) == (1, "most pixels (400 x 300 against 200 x 150)")
    q95 = facts("q95.jpg", width=400, height=300, format="JPEG", jpeg_quality=95, bytes=30_000)
    assert choose_keeper([big, q95]) == (
        1,
        "least compressed (JPEG quality 95 against JPEG quality 50)",
    )
    # same pixels: the lossy file is the original, whatever the sizes and dates
    jpeg = ImageFacts("a.jpg", "x", "same", 0, 400, 300, "JPEG", 9000, 2, 80)
    png = ImageFacts("a.png", "y", "same", 0, 400, 300, "PNG", 200_000, 1)
    assert choose_keeper([png, jpeg]) == (1, "original format (JPEG; the PNG copy has its pixels)")
    # identical files: the earliest
    late = ImageFacts("b.jpg", "x", "same", 0, 400, 300, "JPEG", 9000, 5, 80)
    assert choose_keeper([late, jpeg]) == (1, "earliest of identical copies")
    # an unreadable file is never chosen over a readable one
    gone = ImageFacts("gone.jpg", error="no such file")
    assert choose_keeper([gone, small])[0] == 1


def test_pair_rules_agree_with_the_vectorised_rules() -> None:
    rng = np.random.default_rng(0)
    n = 40
    members = [
        ImageFacts(f"{i}", f"f{i % 17}", f"p{i % 13}", int(rng.integers(0, 2**63)), 10, 10)
        for i in range(n)
    ]
    # some hashes a few bits apart, so the hash rule is exercised; some unreadable files
    members[1:6] = [
        ImageFacts(m.path, m.file_sha, m.pixels_sha, members[0].phash ^ (1 << k), 10, 10)  # type: ignore[operator]
        for k, m in enumerate(members[1:6])
    ]
    members[30:33] = [ImageFacts(m.path, error="gone") for m in members[30:33]]
    first, second = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n)))
    cosines = rng.uniform(0.8, 1.0, len(first))
    found = near_pairs(members, first, second, cosines)
    for i, j, c, near in zip(first, second, cosines, found, strict=True):
        if i != j:
            assert near == (pair_tier(members[i], members[j], float(c)) != "similar"), (i, j)


def test_thousands_of_copies_make_one_picture_without_an_n_by_n_matrix() -> None:
    import tracemalloc

    n = 3000
    facts = [ImageFacts(f"{i}.jpg", "same", "same", 0, 10, 10) for i in range(n)]
    vectors = np.tile(np.array([[1.0, 0.0]], np.float32), (n, 1))
    tracemalloc.start()
    try:
        tier, members = tier_group(tuple(range(n)), (1.0,) * n, facts, vectors)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tier == "exact" and sum(m.keep for m in members) == 1
    assert peak < 0.5 * n * n * 4  # far below a 3000 x 3000 float32 matrix (36 MB)


def test_cli_text_and_json(
    copies: tuple[dict[str, Path], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files, original_db = copies
    db = tmp_path / "c.db"
    shutil.copy(original_db, db)
    assert main(["duplicates", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (group,) = out["groups"]
    assert group["tier"] == "near" and group["pictures"] == 1
    first = group["images"][0]
    assert first["path"] == str(files["original"]) and first["keep"] is True
    assert first["format"] == "JPEG" and first["jpeg_quality"] >= 70
    assert {i["tier"] for i in group["images"][1:]} == {"exact", "near"}
    assert not any(i["keep"] for i in group["images"][1:])

    assert main(["duplicates", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("1 group of near-duplicates (5 images; 0 exact, 1 near, 0 similar)")
    assert "4 suggested for removal" in text
    assert f"  + {files['original']}\n      keep: least compressed" in text
    assert f"  - {files['bytes']}\n      exact copy: same bytes" in text


@pytest.fixture
def served(
    copies: tuple[dict[str, Path], Path], tmp_path: Path
) -> Iterator[tuple[dict[str, Path], TestClient, TestClient]]:
    """The copies' collection served twice: as usual, and allowing file deletion."""
    files, _ = copies
    folder = tmp_path / "photos"
    shutil.copytree(files["original"].parent, folder)
    db = tmp_path / "c.db"
    with Collection.open(db) as collection:
        collection.add([folder])
    moved = {k: folder / v.name for k, v in files.items()}
    plain = ServiceSettings(collections_dir=tmp_path / "a", db=db, warm_up=False)
    allowing = ServiceSettings(
        collections_dir=tmp_path / "b", db=db, warm_up=False, allow_file_deletion=True
    )
    with TestClient(create_app(plain)) as a, TestClient(create_app(allowing)) as b:
        yield moved, a, b


def test_http_duplicates_and_removal(
    served: tuple[dict[str, Path], TestClient, TestClient],
) -> None:
    files, client, allowing = served
    assert client.get("/health").json()["file_deletion"] is False
    assert allowing.get("/health").json()["file_deletion"] is True
    answer = client.get("/collections/c/duplicates")
    assert answer.status_code == 200
    body = answer.json()
    assert body["threshold"] == config.DUPLICATE_THRESHOLD and body["images"] == 6
    (group,) = body["groups"]
    assert group["tier"] == "near"
    keeper, *others = group["images"]
    assert keeper["path"] == str(files["original"]) and keeper["keep"]
    assert keeper["thumbnail_url"] == f"/collections/c/images/{keeper['id']}/thumbnail"
    assert client.get(keeper["thumbnail_url"]).status_code == 200
    assert client.get("/collections/c/duplicates?threshold=0").status_code == 422
    assert client.get("/collections/nosuch/duplicates").status_code == 404

    exact = next(i for i in others if i["path"] == str(files["bytes"]))
    near = next(i for i in others if i["path"] == str(files["small"]))
    # deleting the file needs a server started to allow it: refused, nothing forgotten
    refused = client.delete(f"/collections/c/images/{exact['id']}?delete_file=true")
    assert refused.status_code == 403 and "--allow-file-deletion" in refused.json()["detail"]
    assert client.get("/collections/c").json()["images"] == 6
    # a plain removal forgets the image and leaves the file
    assert client.delete(f"/collections/c/images/{near['id']}").status_code == 204
    assert files["small"].exists()
    # on the server that allows it, the file goes too
    assert (
        allowing.delete(f"/collections/c/images/{exact['id']}?delete_file=true").status_code == 204
    )
    assert not files["bytes"].exists()
    remaining = {
        i["path"] for i in allowing.get("/collections/c/duplicates").json()["groups"][0]["images"]
    }
    assert str(files["bytes"]) not in remaining and str(files["small"]) not in remaining
    assert str(files["original"]) in remaining


def test_a_file_gone_since_indexing_is_judged_by_its_cosine(tmp_path: Path) -> None:
    files = make_copies(tmp_path / "photos")
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([tmp_path / "photos"])
        files["original"].unlink()  # gone since it was indexed
        (group,) = collection.duplicates()
    gone = next(m for m in group.members if m.path == str(files["original"]))
    assert gone.facts.error is not None and not gone.keep
    assert gone.tier == "near" and gone.why.startswith("near copy: cosine 1.000")
    assert group.members[0].path == str(files["bytes"])  # the readable copy is kept
    (as_json,) = (i for i in group.as_dict()["images"] if i["path"] == gone.path)  # type: ignore[attr-defined]
    assert as_json["error"] == gone.facts.error


def test_tiers_in_either_store(db: str, tmp_path: Path) -> None:
    """The same tiers from SQLite and PostgreSQL (the stores differ, the analysis does not)."""
    files = make_copies(tmp_path / "photos")
    with Collection.open(db) as collection:
        collection.add([tmp_path / "photos"])
        (group,) = collection.duplicates()
    assert group.tier == "near" and group.members[0].path == str(files["original"])
    assert [m.tier for m in group.members] == ["keep", "exact", "exact", "near", "near"]
