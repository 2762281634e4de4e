"""Headless Chromium for the dashboard's browser tests (Debian's /usr/bin/chromium, Playwright)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # performance.memory in whole bytes, not rounded buckets (the heap figures of the perf test)
    "--enable-precise-memory-info",
]
#: Hostile text: none of it may ever run. Each would set document.body.dataset.pwned.
HOSTILE = [
    '<img src=x onerror="document.body.dataset.pwned=1">',
    "<script>document.body.dataset.pwned=2</script>",
    "javascript:document.body.dataset.pwned=3",
    '"><svg onload="document.body.dataset.pwned=4">',
]
HOSTILE_TEXT = " ".join(HOSTILE)


@contextmanager
def chromium() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def assert_nothing_ran(page: Any) -> None:
    """No hostile text became markup or ran: no <img>/<svg> from data, no extra <script>."""
    assert page.evaluate("document.body.dataset.pwned") is None
    assert page.locator("img").count() == 0
    # uPlot draws on <canvas>; the sparklines are ours (<svg class=spark>); nothing else may be
    assert page.locator("svg:not(.spark)").count() == 0
    assert page.locator("script").count() == 4  # config, socket.io, uPlot, dashboard.js
    assert page.locator('[href^="javascript:" i], [src^="javascript:" i]').count() == 0
    assert page.locator("[onerror], [onload]").count() == 0


def page_width(page: Any) -> dict[str, int]:
    return page.evaluate(
        "({scroll: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
        " viewport: window.innerWidth})"
    )


def plain(text: str | None) -> str:
    """Shown text without the bidi isolates (FSI … PDI) the page puts around received strings."""
    return (text or "").replace("\u2068", "").replace("\u2069", "")
