"""The review of duplicates on the page (?tab=review), in Debian's Chromium driven by
Playwright, on a phone (390 x 844) and a desktop (1280 x 800): group by group, keep / remove by
keyboard, undo, nothing removed until confirmed, files deleted only where the server allows.

Set LOOKALIKE_SCREENSHOTS=DIR to keep screenshots (docs/review-*.png were made so).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike import Collection
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE
from tests.live_server import live_server
from tests.test_duplicate_tiers import make_copies
from tests.test_page import open_page, overflow, ready, shoot  # noqa: F401 (a fixture)


@pytest.fixture
def photos_with_copies(tmp_path: Path) -> Path:
    """Six distinct sample photos; copies of one (same bytes, PNG, resized, brighter) and an
    exact copy of another."""
    folder = tmp_path / "photos"
    make_copies(folder / "cups")
    for name in ("panda", "starfish", "sunflower"):
        shutil.copytree(SAMPLE / "collection" / name, folder / name)
    shutil.copyfile(folder / "panda" / "image_0002.jpg", folder / "panda" / "copy.jpg")
    return folder


@pytest.fixture
def server(photos_with_copies: Path, tmp_path: Path) -> Iterator[str]:
    db = tmp_path / "demo.db"
    with Collection.open(db) as demo:
        demo.add([photos_with_copies])
    settings = ServiceSettings(
        collections_dir=tmp_path / "collections", db=db, allow_file_deletion=True
    )
    with live_server(create_app(settings)) as base:
        yield base


def marked(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Each card's mark, in order: keep, remove."""
    cards = page.locator("#review-group .review-card")
    return [
        "remove" if "removing" in (cards.nth(i).get_attribute("class") or "") else "keep"
        for i in range(cards.count())
    ]


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_review_groups_by_keyboard_with_undo(
    open_page,  # noqa: F811
    server: str,
    photos_with_copies: Path,
    size: str,
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(size)
    ready(page, server + "/?tab=review")
    expect(page.locator("#review-pos")).to_have_text("group 1 of 2")
    # the surest first: the exact pair, its keeper and its copy marked for removal
    expect(page.locator("#review-tier")).to_contain_text("exact copies")
    expect(page.locator("#review-group .review-card")).to_have_count(2)
    assert marked(page) == ["keep", "remove"]
    expect(page.locator("#review-group .review-badge").nth(1)).to_have_text("exact copy")
    expect(page.locator("#review-marked")).to_have_text("5 photos marked for removal")
    shoot(page, f"review-{size}-exact")

    page.keyboard.press("n")
    expect(page.locator("#review-pos")).to_have_text("group 2 of 2")
    assert "g=2" in page.url
    expect(page.locator("#review-tier")).to_contain_text("near-duplicates")
    cards = page.locator("#review-group .review-card")
    expect(cards).to_have_count(5)
    expect(cards.nth(0)).to_have_attribute(
        "title", str(photos_with_copies / "cups" / "original.jpg")
    )
    expect(cards.nth(0).locator(".review-why")).to_contain_text("keep: least compressed")
    assert marked(page) == ["keep", "remove", "remove", "remove", "remove"]
    assert overflow(page) <= 0
    shoot(page, f"review-{size}")

    # r on the keeper, then undo; k on the next photo (→ first)
    page.keyboard.press("r")
    assert marked(page)[0] == "remove"
    expect(page.locator("#review-marked")).to_have_text("6 photos marked for removal")
    page.keyboard.press("u")
    assert marked(page)[0] == "keep"
    page.keyboard.press("ArrowRight")
    expect(cards.nth(1)).to_have_class(re.compile(r"\bfocused\b"))
    page.keyboard.press("k")
    assert marked(page) == ["keep", "keep", "remove", "remove", "remove"]
    expect(page.locator("#review-marked")).to_have_text("4 photos marked for removal")

    # back to group 1: the marks are kept
    page.keyboard.press("p")
    expect(page.locator("#review-pos")).to_have_text("group 1 of 2")
    assert marked(page) == ["keep", "remove"]

    # a: asks first; nothing is removed yet
    page.keyboard.press("a")
    expect(page.locator("#review-apply")).to_have_text("Really remove 4 photos?")
    info = page.request.get(server + "/collections/demo").json()
    assert info["images"] == 22
    if size == "desktop":  # the server allows it: the files go too
        page.check("#review-files")
    page.keyboard.press("a")
    expect(page.locator("#message")).to_contain_text("4 photos")
    assert page.request.get(server + "/collections/demo").json()["images"] == 18
    gone = [photos_with_copies / "panda" / "copy.jpg", photos_with_copies / "cups" / "resized.jpg"]
    assert all(not p.exists() for p in gone) if size == "desktop" else all(p.exists() for p in gone)
    # what is left: the original and the copy kept, one exact group
    expect(page.locator("#review-pos")).to_have_text("group 1 of 1")
    expect(page.locator("#review-group .review-card")).to_have_count(2)
    shoot(page, f"review-{size}-after")
