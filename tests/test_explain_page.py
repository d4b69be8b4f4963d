"""The page's "Why alike?" toggle in the full-size view of a result, in a real browser
(see tests/test_browser.py; LOOKALIKE_SCREENSHOTS=DIR keeps screenshots at 1280 x 800 and
390 x 844)."""

from __future__ import annotations

from pathlib import Path

from tests.test_browser import page, screenshot, server  # noqa: F401  (fixtures)


def test_explain_toggle_in_the_full_size_view(
    page,  # type: ignore[no-untyped-def]  # noqa: F811
    server: str,  # noqa: F811
    panda_query: Path,
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(server + "/")
        expect(page.locator("body[data-ready=true]")).to_have_count(1)
        page.set_input_files("#file", str(panda_query))
        expect(page.locator("#results .card")).to_have_count(12)
        page.locator("#results .card").first.click()
        toggle = page.locator("#viewer-explain")
        expect(toggle).to_be_visible()
        expect(toggle).to_have_attribute("aria-pressed", "false")
        original = page.locator("#viewer-image").get_attribute("src")
        toggle.click()
        expect(toggle).to_have_attribute("aria-pressed", "true")
        image = page.locator("#viewer-image")
        expect(image).to_have_attribute("src", _blob())
        page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 0")
        # both images side by side on a wide screen, one above the other on a tall one
        wide = image.evaluate("i => i.naturalWidth > i.naturalHeight")
        assert wide == (width > height)
        screenshot(page, f"explain-{width}x{height}")
        toggle.click()
        expect(toggle).to_have_attribute("aria-pressed", "false")
        expect(image).to_have_attribute("src", original or "")

    # from "more like this" (an indexed query), the same toggle asks by the query's id
    page.click("#viewer-similar")
    expect(page.locator("#results .card")).to_have_count(12)
    page.locator("#results .card").first.click()
    page.locator("#viewer-explain").click()
    expect(page.locator("#viewer-explain")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 0")
    # browsing (no query): nothing to explain
    page.locator("#viewer-close").click()
    page.click("[data-tab=browse]")
    page.locator("#browse .card").first.click()
    expect(page.locator("#viewer-explain")).to_be_hidden()
    assert errors == []


def _blob():  # type: ignore[no-untyped-def]
    import re

    return re.compile(r"^blob:")
