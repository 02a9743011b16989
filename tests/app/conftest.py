"""Fixtures for the service's tests: the real service process, and real headless
Chromium (Debian's) for the pages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.app.service_process import ServiceProcess

CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic is refused on a machine with no internet; these
# flags keep it quiet, and --no-sandbox is needed as root.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The real ``timer-service serve``, with no options but its port and database;
    stopped after the test. A module may define its own, with other options."""
    running = ServiceProcess(tmp_path).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
