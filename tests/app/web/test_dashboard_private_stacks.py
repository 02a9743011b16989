"""The dashboard shows a stack only to those allowed to read it: real Chromium, whose
requests reach the root-run service through a forwarder running as a second user, so
the service sees that user's socket, as it would see that user's own browser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.app.second_user_url import url_as_other_user
from tests.app.service_process import ServiceProcess
from tests.chromium import needs_chromium
from tests.second_user import SERVICE_AS_ROOT
from tests.waiting import wait_until
from tests.workers import spawn_sleeper

pytestmark = [needs_chromium, *SERVICE_AS_ROOT]


@pytest.fixture
def as_other_user(service: ServiceProcess) -> Iterator[str]:
    """The service's URL as reached from the second user's socket."""
    with url_as_other_user(service.port) as url:
        yield url


@pytest.fixture
def roots_stack(service: ServiceProcess) -> Iterator[int]:
    """An observe-only timer on a root process that has expired with its stack."""
    worker = spawn_sleeper()
    body = {"pid": worker.pid, "scope_id": "private", "expires_in": 0.2, "signal": 0}
    timer_id = int(httpx.post(service.url + "/timers", json=body).json()["id"])
    stack_url = f"{service.url}/timers/{timer_id}/stack"
    assert wait_until(lambda: httpx.get(stack_url).status_code == 200, timeout=20)
    yield timer_id
    worker.kill()
    worker.wait()


def stack_text(browser: Any, url: str) -> str:
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    stack = page.locator("#stack")
    page.wait_for_function(
        "() => !['', 'loading…'].includes(document.getElementById('stack').textContent.trim())"
    )
    text = str(stack.inner_text())
    health = str(page.locator("#health").inner_text())
    context.close()
    assert "unreachable" not in health, health
    return text


def test_another_users_browser_is_told_the_stack_is_private(
    browser: Any, as_other_user: str, roots_stack: int
) -> None:
    text = stack_text(browser, f"{as_other_user}/ui/timers/{roots_stack}")
    assert text.startswith("Not shown:")
    assert "belongs to uid 0" in text
    assert "Thread" not in text and "time.sleep" not in text


def test_the_owner_sees_the_stack(browser: Any, service: ServiceProcess, roots_stack: int) -> None:
    text = stack_text(browser, f"{service.url}/ui/timers/{roots_stack}")
    assert not text.startswith("Not shown")
    assert "sleep" in text
