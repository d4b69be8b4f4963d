"""The web page, end to end, in a real browser: Debian's headless Chromium driven by Playwright.

Skipped when /usr/bin/chromium is missing, unless LOOKALIKE_REQUIRE_BROWSER=1 (as in CI), where
that is a failure. Playwright never downloads a browser here: it drives the system one.
Set LOOKALIKE_SCREENSHOTS=DIR to keep screenshots of the page.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike import Collection
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE
from tests.live_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _need_browser() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("LOOKALIKE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LOOKALIKE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture
def server(photos: Path, tmp_path: Path) -> Iterator[str]:
    db = tmp_path / "demo.db"
    with Collection.open(db) as demo:
        demo.add([photos])
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db)
    with live_server(create_app(settings)) as base:
        yield base


def screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    folder = os.environ.get("LOOKALIKE_SCREENSHOTS")
    if folder:
        page.wait_for_function(  # every thumbnail shown (they load lazily)
            "() => Array.from(document.images).every(i => !i.offsetParent || i.complete)"
        )
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def card_facts(page) -> list[tuple[int, float, str]]:  # type: ignore[no-untyped-def]
    """(id, score, path) of every result card shown."""
    cards = page.locator("#results .card")
    facts = []
    for i in range(cards.count()):
        card = cards.nth(i)
        facts.append(
            (
                int(card.get_attribute("data-id")),
                float(card.locator(".score").inner_text()),
                card.get_attribute("title"),
            )
        )
    return facts


def test_search_by_upload_then_more_like_this(
    page,  # type: ignore[no-untyped-def]
    server: str,
    panda_query: Path,
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(page.locator("#collection")).to_have_value("demo")
    expect(page.locator("#count")).to_contain_text("30 images")

    # Upload the query through the page's file input.
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    expect(page.locator("#query-title")).to_have_text("query_panda.jpg")
    expect(page.locator("#query-meta")).to_contain_text("12 results")
    facts = card_facts(page)
    scores = [score for _, score, _ in facts]
    assert scores == sorted(scores, reverse=True)
    assert all(-1 <= score <= 1 for score in scores)  # cosines of mean-centred vectors
    assert all("/panda/" in path for _, _, path in facts[:4]), facts
    # Thumbnails really loaded; cards say the folder as well as the name.
    first_img = page.locator("#results .card img").first
    expect(first_img).to_have_js_property("complete", True)
    assert first_img.evaluate("img => img.naturalWidth") > 0
    expect(page.locator("#results .card .folder").first).to_have_text(re.compile(r"/panda$"))
    screenshot(page, "search")

    # Click a result: its full-size view; "more like this" from there, by its id.
    clicked_id, _, clicked_path = facts[1]
    page.locator("#results .card").nth(1).click()
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#viewer-name")).to_have_text(Path(clicked_path).name)
    page.click("#viewer-similar")
    expect(page.locator("#viewer")).to_be_hidden()
    expect(page.locator("#query-title")).to_have_text(
        re.compile(r"^More like " + re.escape(Path(clicked_path).name))
    )
    expect(page.locator("#results .card")).to_have_count(12)
    similar = card_facts(page)
    assert clicked_id not in [card_id for card_id, _, _ in similar]
    assert sum("/panda/" in path for _, _, path in similar[:4]) >= 3, similar
    screenshot(page, "more-like-this")

    # Browse the collection, and search from there.
    page.click("[data-tab=browse]")
    expect(page.locator("#browse .card")).to_have_count(30)
    expect(page.locator("#page-info")).to_have_text("1\u201330 of 30")  # en dash
    screenshot(page, "browse")
    page.locator("#browse .card").first.click()
    page.click("#viewer-similar")
    expect(page.locator("#tab-search")).to_be_visible()
    expect(page.locator("#query-title")).to_contain_text("More like")
    assert errors == []


def test_add_images_by_upload(
    page,  # type: ignore[no-untyped-def]
    server: str,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    page.goto(server + "/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    new = [tmp_path / "new1.jpg", tmp_path / "notes.jpg"]
    shutil.copy(SAMPLE / "queries" / "query_panda.jpg", new[0])
    new[1].write_text("not an image")
    page.click("[data-tab=add]")
    page.set_input_files("#add-files", [str(p) for p in new])
    expect(page.locator("#progress-text")).to_have_text(
        "2 files: 1 new · 1 failed: notes.jpg (not a recognised image)"
    )
    expect(page.locator("#add-log")).to_contain_text("new1.jpg: added")
    expect(page.locator("#add-log .bad")).to_have_text("notes.jpg: not a recognised image")
    expect(page.locator("#count")).to_contain_text("31 images")
    screenshot(page, "add")


def test_a_missing_browser_skips_unless_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", Path("/nonexistent"))
    monkeypatch.delenv("LOOKALIKE_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        _need_browser()
    monkeypatch.setenv("LOOKALIKE_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="LOOKALIKE_REQUIRE_BROWSER=1"):
        _need_browser()


def test_paste_and_drop_a_photo(
    page,  # type: ignore[no-untyped-def]
    server: str,
    panda_query: Path,
) -> None:
    from playwright.sync_api import expect

    page.goto(server + "/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    data = list(panda_query.read_bytes())
    # Ctrl+V of an image: a paste event carrying the file.
    page.evaluate(
        """bytes => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "pasted.jpg", {type: "image/jpeg"}));
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data}));
        }""",
        data,
    )
    expect(page.locator("#query-title")).to_have_text("pasted.jpg")
    expect(page.locator("#results .card")).to_have_count(12)
    assert "/panda/" in page.locator("#results .card").first.get_attribute("title")

    # A file dropped on the drop zone.
    page.evaluate(
        """bytes => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", {type: "image/jpeg"}));
            document.querySelector("#drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    expect(page.locator("#query-title")).to_have_text("dropped.jpg")
    expect(page.locator("#results .card")).to_have_count(12)

    # Changing the options re-runs the search.
    page.fill("#k", "3")
    page.locator("#k").dispatch_event("change")
    expect(page.locator("#results .card")).to_have_count(3)


def test_search_by_words_alone_then_with_the_photo(
    page,  # type: ignore[no-untyped-def]
    server: str,
    photos: Path,
) -> None:
    """The words box: words alone (issue 21), then a photo searched among what they find."""
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    page.fill("#words", "starfish")
    page.click("#words-form button")
    expect(page.locator("#results .card")).to_have_count(12)
    expect(page.locator("#query-title")).to_have_text("\u201cstarfish\u201d")
    assert all("/starfish/" in path for _, _, path in card_facts(page)[:5])
    assert "t=starfish" in page.url and "q=words" in page.url

    page.fill("#words", "golden retreiver")
    page.click("#words-form button")
    expect(page.locator("#message")).to_contain_text("nearest known names: golden retriever")

    page.set_input_files("#file", str(photos / "chair" / "image_0003.jpg"))
    expect(page.locator("#query-title")).to_have_text("image_0003.jpg")
    expect(page.locator("#words")).to_have_value("")  # a new photo: its own search
    page.fill("#words", "cup")
    page.click("#words-form button")
    expect(page.locator("#query-meta")).to_contain_text("result")
    facts = card_facts(page)
    assert facts and all("/cup/" in path for _, _, path in facts), facts
    assert errors == []
