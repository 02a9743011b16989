"""The API docs load nothing from the internet: cluster nodes usually have none. The
module's tests share one service: they only read pages no test changes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.app.service_process import ServiceProcess
from tests.chromium import needs_chromium

pytestmark = needs_chromium


def open_offline(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A page on which every request that leaves this service is refused and listed."""
    context = browser.new_context()
    page = context.new_page()
    refused: list[str] = []
    own = urlsplit(url).netloc

    def route(request_route: Any) -> None:
        if urlsplit(request_route.request.url).netloc == own:
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    return page, refused


def test_the_api_docs_render_every_operation_with_no_internet(
    browser: Any, shared_service: ServiceProcess
) -> None:
    page, refused = open_offline(browser, shared_service.url)
    page.goto(shared_service.url + "/docs")
    page.locator(".opblock-summary-path").first.wait_for(timeout=15000)
    assert "/timers/release" in page.locator("body").inner_text()
    assert refused == [], f"/docs asked the internet for {refused}"


def test_redoc_is_not_served_half_broken(shared_service: ServiceProcess) -> None:
    # ReDoc fetches its logo from a CDN; rather than a page that phones home, none.
    assert httpx.get(shared_service.url + "/redoc").status_code == 404
