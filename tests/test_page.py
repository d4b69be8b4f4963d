"""The web page as a new user meets it, on a phone (390 x 844, touch) and a desktop (1280 x 800),
in Debian's Chromium driven by Playwright: no sideways scrolling, results on the first screen,
the address that Back, Forward, reload and a shared link follow, the full-size view, region
search, clear errors, the new-collection form, the empty collection, the loading indicator.

Set LOOKALIKE_SCREENSHOTS=DIR to keep screenshots (docs/page-*.png were made so).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from lookalike import Collection
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE
from tests.live_server import live_server
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _need_browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
SIZES = {"phone": PHONE, "desktop": DESKTOP}
BOX_STARTS = "start => (new URLSearchParams(location.search).get('box') || '').startsWith(start)"


@pytest.fixture
def open_page(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """open_page(size) -> a fresh browser page of that size (several may be opened)."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        pages: list[object] = []

        def open_page(size: str = "desktop") -> object:
            context = browser.new_context(**SIZES[size])
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.js_errors = errors  # type: ignore[attr-defined]
            pages.append(page)
            return page

        try:
            yield open_page
        finally:
            for page in pages:
                assert page.js_errors == []  # type: ignore[attr-defined]
            browser.close()


@pytest.fixture
def server(photos: Path, tmp_path: Path) -> Iterator[str]:
    db = tmp_path / "demo.db"
    with Collection.open(db) as demo:
        demo.add([photos])
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db)
    with live_server(create_app(settings)) as base:
        yield base


def ready(page, url: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1)


def query_of(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def overflow(page) -> int:  # type: ignore[no-untyped-def]
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(
        page.evaluate(
            "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - window.innerWidth"
        )
    )


def shoot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    folder = os.environ.get("LOOKALIKE_SCREENSHOTS")
    if folder:
        page.wait_for_function(  # every image in the window shown (the others load lazily)
            "() => Array.from(document.images).every(i => !i.offsetParent || i.complete"
            " || i.getBoundingClientRect().top > innerHeight)"
        )
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_fits_the_screen_with_results_on_the_first_screen(
    open_page, server: str, panda_query: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(size)
    ready(page, server + "/")
    height = SIZES[size]["viewport"]["height"]  # type: ignore[index]
    assert overflow(page) == 0
    # Touch-only phones can neither drop nor press Ctrl+V: the page does not offer them.
    if size == "phone":
        expect(page.get_by_text("Ctrl+V")).to_be_hidden()
        assert "Ctrl+V" not in page.locator("body").inner_text()
        expect(page.get_by_text("drop one here")).to_be_hidden()
    else:
        expect(page.get_by_text("Ctrl+V")).to_be_visible()
    expect(page.get_by_text("Choose a photo")).to_be_visible()

    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    assert overflow(page) == 0
    first = page.locator("#results .card").first.bounding_box()
    assert first is not None and first["y"] + 0.5 * first["height"] < height, first
    shoot(page, f"page-{size}")

    page.locator("#results .card").first.click()
    expect(page.locator("#viewer")).to_be_visible()
    assert overflow(page) == 0
    box = page.locator("#viewer-similar").bounding_box()
    assert box is not None and box["y"] + box["height"] <= height  # reachable without scrolling
    shoot(page, f"page-{size}-view")


def test_back_forward_reload_and_a_shared_link(open_page, server: str, panda_query: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page("phone")
    ready(page, server + "/")
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    upload_url = page.url
    assert query_of(page)["q"].startswith("upload:")
    first_results = page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.id)")

    clicked = first_results[2]
    page.locator("#results .card").nth(2).click()
    expect(page.locator("#viewer")).to_be_visible()
    assert query_of(page)["view"] == clicked
    page.click("#viewer-similar")
    expect(page.locator("#query-title")).to_have_text(re.compile("^More like "))
    assert query_of(page)["q"] == f"id:{clicked}" and "view" not in query_of(page)
    similar_url = page.url
    # the new results replace the old ones (waited for), and leave the image itself out
    expect(page.locator(f'#results .card[data-id="{clicked}"]')).to_have_count(0)
    expect(page.locator("#results .card")).not_to_have_count(0)
    similar = page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.id)")
    assert clicked not in similar

    page.go_back()  # to the first search, with the image that was clicked still open
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#query-title")).to_have_text("query_panda.jpg")
    page.go_back()
    expect(page.locator("#viewer")).to_be_hidden()
    assert page.url == upload_url
    expect(page.locator("#results .card")).to_have_count(12)
    assert (
        page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.id)")
        == first_results
    )
    page.go_forward()
    page.go_forward()
    expect(page.locator("#query-title")).to_have_text(re.compile("^More like "))
    assert page.url == similar_url
    expect(page.locator(f"#results .card[data-id='{similar[0]}']")).to_have_count(1)

    clicked_name = page.locator("#query-title").inner_text()
    page.reload()  # reload keeps the search, and says what it is like
    expect(page.locator("#results .card")).to_have_count(12)
    expect(page.locator("#query-title")).to_have_text(clicked_name)
    assert page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.id)") == similar

    page.goto(upload_url)  # an uploaded photo is kept in the tab for a reload...
    expect(page.locator("#results .card")).to_have_count(12)
    expect(page.locator("#query-title")).to_have_text("query_panda.jpg")

    other = open_page("desktop")  # ...a link to "more like this" works anywhere,
    ready(other, similar_url)
    expect(other.locator("#results .card")).to_have_count(12)
    assert (
        other.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.id)") == similar
    )
    ready(other, upload_url)  # and a link to an upload says it cannot carry the photo
    expect(other.locator("#message")).to_contain_text("choose it again")


def test_full_size_view_shows_folder_and_score_and_deletes(
    open_page, server: str, panda_query: Path
) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image
    from playwright.sync_api import expect

    page = open_page("desktop")
    ready(page, server + "/")
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    card = page.locator("#results .card").first
    path, score = card.get_attribute("title"), card.locator(".score").inner_text()
    card.click()
    expect(page.locator("#viewer-name")).to_have_text(Path(path).name)
    expect(page.locator("#viewer-folder")).to_have_text(str(Path(path).parent))
    expect(page.locator("#viewer-facts")).to_contain_text(f"score {score}")
    # the calibrated confidences of the default model (same item / same kind)
    expect(page.locator("#viewer-facts")).to_contain_text("same item")
    expect(page.locator("#viewer-facts")).to_contain_text("same kind")
    image = page.locator("#viewer-image")
    expect(image).to_have_js_property("complete", True)
    with Image.open(path) as original:  # the original file, at its size
        assert image.evaluate("img => img.naturalWidth") == original.width
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()
    assert "view" not in query_of(page)

    # No token on this server: deleting is allowed, after a second click.
    card.click()
    delete = page.locator("#viewer-delete")
    expect(delete).to_be_visible()
    delete.click()
    expect(delete).to_have_text("Really delete?")
    delete.click()
    expect(page.locator("#viewer")).to_be_hidden()
    expect(page.locator("#message")).to_have_text(f"Deleted {Path(path).name}.")
    expect(page.locator("#count")).to_contain_text("29 images")
    expect(page.locator(f"#results .card[title='{path}']")).to_have_count(0)


def test_dragging_a_box_searches_that_region(
    open_page, server: str, photos: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image
    from playwright.sync_api import expect

    # A photo of a panda (left) next to a cup (right).
    panda = Image.open(sorted((photos / "panda").glob("*.jpg"))[0]).convert("RGB")
    cup = Image.open(sorted((photos / "cup").glob("*.jpg"))[0]).convert("RGB")
    both = Image.new("RGB", (600, 300))
    both.paste(panda.resize((300, 300)), (0, 0))
    both.paste(cup.resize((300, 300)), (300, 0))
    both.save(tmp_path / "both.jpg")

    page = open_page("desktop")
    ready(page, server + "/")
    page.set_input_files("#file", str(tmp_path / "both.jpg"))
    expect(page.locator("#results .card")).to_have_count(12)

    def drag(x0: float, y0: float, x1: float, y1: float) -> None:
        rect = page.locator("#query-image").bounding_box()
        assert rect is not None
        page.mouse.move(rect["x"] + x0 * rect["width"], rect["y"] + y0 * rect["height"])
        page.mouse.down()
        page.mouse.move(rect["x"] + x1 * rect["width"], rect["y"] + y1 * rect["height"], steps=5)
        page.mouse.up()

    def folders() -> list[str]:
        expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
        return [Path(p).parent.name for p in page.locator("#results .card").evaluate_all(
            "cs => cs.map(c => c.title)")][:3]  # fmt: skip

    drag(0.55, 0.05, 0.97, 0.95)
    expect(page.locator("#drag-box")).to_be_visible()
    assert query_of(page)["box"].startswith("0.5")
    expect(page.locator("#query-meta")).to_contain_text("in the box")
    assert folders() == ["cup"] * 3
    drag(0.03, 0.05, 0.45, 0.95)
    expect(page.locator("#query-meta")).to_contain_text("in the box")
    page.wait_for_function(
        "() => new URLSearchParams(location.search).get('box').startsWith('0.0')"
    )
    assert folders() == ["panda"] * 3
    page.go_back()  # the previous box, searched again from the address
    page.wait_for_function(
        "() => new URLSearchParams(location.search).get('box').startsWith('0.5')"
    )
    assert folders() == ["cup"] * 3
    page.click("#whole-photo")
    expect(page.locator("#drag-box")).to_be_hidden()
    assert "box" not in query_of(page)


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_file_that_is_not_an_image_says_so(
    open_page, server: str, tmp_path: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(size)
    ready(page, server + "/")
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list")
    page.set_input_files("#file", str(notes))
    expect(page.locator("#message")).to_be_visible()
    expect(page.locator("#message")).to_contain_text("“notes.txt” is not an image (text/plain)")
    assert overflow(page) == 0
    if size == "phone":
        shoot(page, "page-phone-not-an-image")
    # A text file named like a photo: the server decodes by content and says what is wrong.
    fake = tmp_path / "holiday.jpg"
    fake.write_text("not really a photo")
    page.set_input_files("#file", str(fake))
    expect(page.locator("#message")).to_contain_text(
        "Cannot search with holiday.jpg: not a recognised image"
    )
    expect(page.locator("#message")).not_to_contain_text("holiday.jpg: holiday.jpg")
    expect(page.locator("#results .card")).to_have_count(0)


def test_new_collection_form_and_the_empty_collection(open_page, server: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page("phone")
    ready(page, server + "/")
    page.on("dialog", lambda dialog: pytest.fail(f"a native {dialog.type}() was used"))
    page.click("#new-collection")
    expect(page.locator("#new-dialog")).to_be_visible()
    name = page.locator("#new-name")
    name.fill("my photos!")
    page.keyboard.press("Enter")
    expect(page.locator("#new-error")).to_have_text(
        "Only letters, digits, - and _ can be used: not spaces, “!”."
    )
    name.fill("demo")
    page.click("#new-form button[type=submit]")
    expect(page.locator("#new-error")).to_have_text("There is already a collection “demo”.")
    name.fill("x" * 64 + "y")  # the field stops at 64; the server's own limit is the same
    assert len(name.input_value()) == 64
    name.fill("holiday-2026")
    page.click("#new-form button[type=submit]")
    expect(page.locator("#new-dialog")).to_be_hidden()
    expect(page.locator("#collection")).to_have_value("holiday-2026")
    assert query_of(page)["c"] == "holiday-2026" and query_of(page)["tab"] == "add"
    expect(page.locator("#tab-add")).to_be_visible()
    expect(page.locator("#count")).to_have_text(re.compile(r"^0 images"))

    page.click("[data-tab=search]")
    expect(page.locator("#results .empty")).to_contain_text("This collection is empty")
    page.click("#results .empty button")  # "Add images"
    expect(page.locator("#tab-add")).to_be_visible()


def test_loading_indicator_plurals_and_favicon(open_page, server: str, panda_query: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page("desktop")
    ready(page, server + "/")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    response = page.request.get(server + icon)
    assert response.ok and response.headers["content-type"].startswith("image/svg+xml")

    held: list[object] = []
    page.route("**/search?*", lambda route: held.append(route))
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#spinner")).to_be_visible()
    expect(page.locator("#results")).to_have_attribute("aria-busy", "true")
    deadline = time.monotonic() + 30
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    held[0].continue_()  # type: ignore[attr-defined]
    page.unroute("**/search?*")
    expect(page.locator("#spinner")).to_be_hidden()
    expect(page.locator("#query-meta")).to_contain_text("12 results")

    if not page.locator("#k").is_visible():
        page.locator("#options summary").click()
    page.fill("#k", "1")
    page.locator("#k").dispatch_event("change")
    expect(page.locator("#results .card")).to_have_count(1)
    expect(page.locator("#query-meta")).to_contain_text(re.compile(r"\b1 result in"))
    expect(page.locator("#count")).to_have_text(re.compile(r"^30 images"))


def test_weak_matches_are_dimmed(open_page, server: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect

    noise = tmp_path / "noise.png"
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(noise)
    page = open_page("desktop")
    ready(page, server + "/")
    page.set_input_files("#file", str(noise))
    expect(page.locator("#results .card")).to_have_count(12)
    expect(page.locator("#results .card.weak")).to_have_count(12)
    expect(page.locator("#query-meta")).to_contain_text("only weak matches")


def test_the_box_localization_found_is_shown(open_page, server: str, panda_query: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page("desktop")
    ready(page, server + "/")
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    expect(page.locator("#query-box")).to_be_hidden()
    page.check("#localize")
    expect(page.locator("#query-meta")).to_contain_text(
        re.compile(r"for the object found \(red box\)|no object found: whole photo")
    )
    assert query_of(page)["loc"] == "1"
    box = page.locator("#query-box")
    if "for the object found" in page.locator("#query-meta").inner_text():
        expect(box).to_be_visible()
    else:
        expect(box).to_be_hidden()
    page.reload()  # the option is in the address too
    expect(page.locator("#localize")).to_be_checked()


def test_the_rerank_option_is_sent_and_kept(open_page, server: str, panda_query: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page("desktop")
    ready(page, server + "/")
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    with page.expect_response(lambda r: "rerank=true" in r.url) as answer:
        page.check("#rerank")
    assert answer.value.status == 200 and answer.value.json()["reranked"] is True
    expect(page.locator("#results .card")).to_have_count(12)
    assert query_of(page)["rr"] == "1"
    page.reload()  # the option is in the address too
    expect(page.locator("#rerank")).to_be_checked()


def test_with_a_token_delete_waits_for_it_and_the_header_still_fits(
    open_page, photos: Path, tmp_path: Path, panda_query: Path
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    db = tmp_path / "demo.db"
    with Collection.open(db) as demo:
        demo.add([photos / "panda"])
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db, token="s3cret")
    with live_server(create_app(settings)) as base:
        page = open_page("phone")
        ready(page, base + "/")
        expect(page.locator("#token")).to_be_visible()
        assert overflow(page) == 0
        page.set_input_files("#file", str(panda_query))
        expect(page.locator("#results .card")).to_have_count(5)
        page.locator("#results .card").first.click()
        expect(page.locator("#viewer")).to_be_visible()
        expect(page.locator("#viewer-delete")).to_be_hidden()  # no token given yet
        page.keyboard.press("Escape")
        page.fill("#token", "s3cret")
        page.locator("#token").dispatch_event("change")
        page.locator("#results .card").first.click()
        expect(page.locator("#viewer-delete")).to_be_visible()
        page.click("#viewer-delete")
        page.click("#viewer-delete")
        expect(page.locator("#count")).to_contain_text("4 images")
        expect(page.locator("#results .card")).to_have_count(4)


def test_a_dropped_file_that_is_not_an_image_says_so(open_page, server: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page("desktop")
    ready(page, server + "/")
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["%PDF-1.4"], "cv.pdf", {type: "application/pdf"}));
            document.querySelector("#drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }"""
    )
    expect(page.locator("#message")).to_contain_text("“cv.pdf” is not an image (application/pdf)")


def test_only_the_last_uploads_are_kept_in_the_tab(open_page, server: str, photos: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page("desktop")
    ready(page, server + "/")
    files = sorted((photos / "cup").glob("*.jpg"))[:5]
    urls = []
    for file in files:
        page.set_input_files("#file", str(file))
        expect(page.locator("#query-title")).to_have_text(file.name)
        expect(page.locator("#results .card")).to_have_count(12)
        urls.append(page.url)
    kept = page.evaluate(
        "() => Object.keys(sessionStorage).filter(k => k.startsWith('lookalike-upload:'))"
    )
    assert len(kept) == 3
    page.goto(urls[-1])  # a reload of the last upload still works...
    expect(page.locator("#query-title")).to_have_text(files[-1].name)
    expect(page.locator("#results .card")).to_have_count(12)
    page.goto(urls[0])  # ...the first one was let go
    expect(page.locator("#message")).to_contain_text("choose it again")


# --- issue 18: a page that finishes the job ---------------------------------------------------


@pytest.fixture
def labelled_server(photos: Path, tmp_path: Path) -> Iterator[str]:
    """The sample photos labelled by their folder and grouped into 3 clusters, with one tall
    photo (a panda stretched to 1:4) in a folder of its own."""
    from PIL import Image

    tall = photos / "tall" / "tall_panda.jpg"
    tall.parent.mkdir()
    with Image.open(sorted((photos / "panda").glob("*.jpg"))[0]) as panda:
        panda.convert("RGB").resize((200, 800)).save(tall)
    db = tmp_path / "demo.db"
    with Collection.open(db) as demo:
        demo.add([photos])
        demo.set_labels({str(p): p.parent.name for p in photos.rglob("*.jpg") if p != tall})
        demo.cluster(3)
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db)
    with live_server(create_app(settings)) as base:
        yield base


def box_of(page, selector: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box  # type: ignore[no-any-return]


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_message_goes_when_the_user_moves_on(
    open_page, server: str, tmp_path: Path, panda_query: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(size)
    ready(page, server + "/")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("not really a photo")
    message = page.locator("#message")

    page.set_input_files("#file", str(fake))  # a bad photo, then Browse: the error is done with
    expect(message).to_contain_text("holiday.jpg: not a recognised image")
    page.click("[data-tab=browse]")
    expect(page.locator("#browse .card")).to_have_count(30)
    expect(message).to_be_hidden()

    page.click("[data-tab=search]")  # a bad photo, then a good one
    page.set_input_files("#file", str(fake))
    expect(message).to_be_visible()
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    expect(message).to_be_hidden()

    page.set_input_files("#file", str(fake))  # a bad photo, then images added
    expect(message).to_be_visible()
    page.click("[data-tab=add]")
    expect(message).to_be_hidden()


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_heic_query_is_drawn_and_a_box_can_be_dragged_on_it(
    open_page, server: str, tmp_path: Path, photos: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image
    from playwright.sync_api import expect

    heic = tmp_path / "IMG_0001.HEIC"
    with Image.open(sorted((photos / "panda").glob("*.jpg"))[0]) as panda:
        panda.convert("RGB").save(heic, format="HEIF", quality=90)
    assert heic.read_bytes()[4:12] == b"ftypheic"  # a real HEIC, which Chromium cannot draw

    page = open_page(size)
    ready(page, server + "/")
    page.set_input_files("#file", str(heic))
    expect(page.locator("#results .card")).to_have_count(12)
    image = page.locator("#query-image")
    page.wait_for_function(
        "() => { const i = document.querySelector('#query-image'); "
        "return i.complete && i.naturalWidth > 0; }"
    )
    with Image.open(heic) as original:
        assert image.evaluate("i => i.naturalWidth / i.naturalHeight") == pytest.approx(
            original.width / original.height, rel=0.02
        )
    rect = box_of(page, "#query-image")
    page.mouse.move(rect["x"] + 0.2 * rect["width"], rect["y"] + 0.2 * rect["height"])
    page.mouse.down()
    page.mouse.move(rect["x"] + 0.8 * rect["width"], rect["y"] + 0.8 * rect["height"], steps=5)
    page.mouse.up()
    expect(page.locator("#query-meta")).to_contain_text("in the box")
    assert query_of(page)["box"].startswith("0.2")
    shoot(page, f"page-{size}-heic")


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_query_photo_is_large_enough_to_drag_a_box_on(
    open_page, server: str, panda_query: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(size)
    ready(page, server + "/")
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    shown = box_of(page, "#query-image")
    assert max(shown["width"], shown["height"]) >= 250, shown
    assert overflow(page) == 0
    # ...and the first results are still on the first screen.
    first = box_of(page, "#results .card >> nth=0")
    height = SIZES[size]["viewport"]["height"]  # type: ignore[index]
    assert first["y"] + 0.5 * first["height"] < height, first


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_same_category_says_which_category_it_searched(
    open_page, labelled_server: str, panda_query: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(size)
    ready(page, labelled_server + "/")
    page.set_input_files("#file", str(panda_query))
    expect(page.locator("#results .card")).to_have_count(12)
    expect(page.locator("#query-meta")).not_to_contain_text("searched")
    if not page.locator("#by-category").is_visible():
        page.locator("#options-box summary").click()
    with page.expect_response(lambda r: "by_category=true" in r.url) as answer:
        page.check("#by-category")
    searched = answer.value.json()["searched_categories"]
    assert searched and "panda" in searched
    word = "category" if len(searched) == 1 else "categories"
    expect(page.locator("#query-meta")).to_contain_text(f"searched {word} {', '.join(searched)}")
    assert overflow(page) == 0
    shoot(page, f"page-{size}-category")


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_full_size_view_keeps_the_name_and_close_in_sight(
    open_page, labelled_server: str, photos: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(size)
    ready(page, labelled_server + "/")
    page.set_input_files("#file", str(photos / "tall" / "tall_panda.jpg"))  # finds itself
    page.locator("#results .card[title$='tall_panda.jpg']").click()
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#viewer-name")).to_have_text("tall_panda.jpg")
    page.wait_for_function("() => document.querySelector('#viewer-image').complete")
    image, name = box_of(page, "#viewer-image"), box_of(page, "#viewer-name")
    close, similar = box_of(page, "#viewer-close"), box_of(page, "#viewer-similar")
    height = SIZES[size]["viewport"]["height"]  # type: ignore[index]
    assert image["y"] + image["height"] <= name["y"] + 1, (image, name)  # not covered
    assert image["height"] > 0.4 * height  # the image is still the main thing
    assert close["y"] < similar["y"]  # Close is not under the other buttons
    assert abs(close["y"] - name["y"]) < close["height"], (close, name)  # beside the name
    for button in (close, similar):
        assert button["y"] + button["height"] <= height  # reachable without scrolling
    assert overflow(page) == 0
    shoot(page, f"page-{size}-view-tall")
    page.click("#viewer-close")
    expect(page.locator("#viewer")).to_be_hidden()


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_browse_narrows_by_category_folder_and_cluster(
    open_page, labelled_server: str, tmp_path: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(size)
    # An image uploaded under its own name: shown by that name, in "uploaded here".
    photo = (SAMPLE / "queries" / "query_panda.jpg").read_bytes()
    added = page.request.post(
        labelled_server + "/collections/demo/images",
        multipart={"files": {"name": "my holiday.jpg", "mimeType": "image/jpeg", "buffer": photo}},
    )
    assert added.status == 201
    ready(page, labelled_server + "/?tab=browse")
    cards = page.locator("#browse .card")
    expect(cards).to_have_count(32)
    first = cards.first  # the newest: the upload
    expect(first.locator(".name")).to_have_text("my holiday.jpg")
    expect(first.locator(".folder")).to_have_text("uploaded here")
    expect(first.locator(".row")).to_have_count(0)  # no score, no category: no empty row
    labelled = page.locator("#browse .card[title*='/panda/']").first
    expect(labelled.locator(".category")).to_have_text("panda")

    category = page.locator("#facet-category")
    expect(category).to_be_visible()
    for facet in ("#facet-folder", "#facet-cluster"):
        expect(page.locator(facet)).to_be_visible()
    assert overflow(page) == 0
    shoot(page, f"page-{size}-browse")
    expect(category.locator("option[value=panda]")).to_have_text("panda (5)")
    category.select_option("panda")
    expect(cards).to_have_count(5)
    assert query_of(page)["category"] == "panda"
    expect(page.locator("#page-info")).to_have_text("1\u20135 of 5")
    assert all("/panda/" in t for t in cards.evaluate_all("cs => cs.map(c => c.title)"))
    assert overflow(page) == 0
    shoot(page, f"page-{size}-browse-panda")

    page.locator("#facets-clear").click()  # "show all"
    expect(cards).to_have_count(32)
    folder = page.locator("#facet-folder")
    expect(folder.locator("option", has_text="photos/tall (1)")).to_have_count(1)
    folder.select_option(label="uploaded here (1)")
    expect(cards).to_have_count(1)
    expect(cards.first.locator(".name")).to_have_text("my holiday.jpg")
    page.go_back()  # the filters are in the address: Back undoes one
    expect(cards).to_have_count(32)

    cluster = page.locator("#facet-cluster")
    options = cluster.locator("option").evaluate_all("os => os.map(o => o.textContent)")
    counts = [int(re.search(r"\((\d+)\)$", o).group(1)) for o in options[1:]]  # type: ignore[union-attr]
    assert len(counts) == 3 and sum(counts) == 31  # the three clusters of the indexed photos
    cluster.select_option(index=1)
    expect(cards).to_have_count(counts[0])
    page.reload()
    expect(cards).to_have_count(counts[0])
    expect(cluster).not_to_have_value("")


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_upload_bar_says_which_file_failed_and_why(
    open_page, server: str, tmp_path: Path, size: str
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    new = [tmp_path / "new1.jpg", tmp_path / "notes.jpg"]
    shutil.copy(SAMPLE / "queries" / "query_panda.jpg", new[0])
    new[1].write_text("not an image")
    page = open_page(size)
    ready(page, server + "/?tab=add")
    page.set_input_files("#add-files", [str(p) for p in new])
    text = page.locator("#progress-text")
    expect(text).to_have_text("2 files: 1 new · 1 failed: notes.jpg (not a recognised image)")
    width = "e => e.style.width"  # what it is set to (the bar then grows to it)
    assert page.locator("#progress-fill").evaluate(width) == "50%"  # half went in...
    assert page.locator("#progress-failed").evaluate(width) == "50%"  # ...half did not
    colour = "e => getComputedStyle(e).backgroundColor"
    assert page.locator("#progress-failed").evaluate(colour) != page.locator(
        "#progress-fill"
    ).evaluate(colour)
    expect(page.locator("#count")).to_contain_text("31 images")
    assert overflow(page) == 0
    shoot(page, f"page-{size}-add")
