"""Real headless Chromium (Debian's) for the pages: the browser fixture, the mark for
tests that need it, and a watched page (the ``page`` fixture) that fails its test on
any script error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "browser", "needs_chromium", "page", "watched_page"]

CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic is refused on a machine with no internet; these
# flags keep it quiet, and --no-sandbox is needed as root.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def watched_page(browser: Browser) -> Iterator[Page]:
    """A page in a context of its own (1400 x 900), which fails the test on the way out
    if a script on it threw, opened a dialog, or set ``window.__pwned``: the tests show
    hostile strings (``<script>alert(1)</script>``, ``onerror="window.__pwned=1"``)
    that must stay text."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        opened = context.new_page()
        errors: list[str] = []
        dialogs: list[str] = []
        opened.on("pageerror", lambda error: errors.append(str(error)))

        def refuse(dialog: Dialog) -> None:
            # alert() from markup that ran as script: recorded, and the test fails.
            dialogs.append(dialog.message)
            dialog.dismiss()

        opened.on("dialog", refuse)
        yield opened
        assert errors == [] and dialogs == [], (errors, dialogs)
        assert opened.evaluate("window.__pwned") is None
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A ``watched_page`` for the test (a module may define its own ``page``)."""
    with watched_page(browser) as opened:
        yield opened
