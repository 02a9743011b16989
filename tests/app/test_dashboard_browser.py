"""The dashboard in real headless Chromium (Debian's), against the real service."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.service_process import ServiceProcess
from tests.workers import spawn_sleeper, wait_dead

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parents[2] / "artifacts"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"
)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp_path).start()
    yield running
    running.stop()


@pytest.fixture
def page(browser: object, service: ServiceProcess) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(service.url + "/")
    opened.evaluate("window.__openedOnce = true")  # gone if the page ever reloads
    yield opened
    assert opened.evaluate("window.__openedOnce") is True, "the page reloaded"
    assert errors == [], errors
    context.close()


def arm(service: ServiceProcess, pid: int, scope: str, expires_in: float) -> int:
    body = {"pid": pid, "scope_id": scope, "expires_in": expires_in}
    response = httpx.post(service.url + "/timers", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_a_timer_appears_with_a_ticking_countdown(
    page: object, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(service, sleeper.pid, "train.py#42", 120)
    row = page.locator(f'[data-timer-id="{timer_id}"][data-state="active"]')  # type: ignore[attr-defined]
    row.wait_for(timeout=5000)
    first = row.locator(".countdown").inner_text()
    page.wait_for_timeout(2100)  # type: ignore[attr-defined]
    second = row.locator(".countdown").inner_text()
    assert first != second, f"countdown did not move: {first!r}"
    assert row.locator(".scope").inner_text() == "train.py#42"
    assert str(sleeper.pid) in row.inner_text()


def test_a_killed_worker_flips_to_killed_without_a_reload_and_the_title_counts_it(
    page: object, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(service, sleeper.pid, "stuck", 1.5)
    page.locator(f'[data-timer-id="{timer_id}"][data-state="active"]').wait_for(timeout=5000)  # type: ignore[attr-defined]
    assert wait_dead(sleeper) == -9
    killed = page.locator(f'[data-timer-id="{timer_id}"][data-state="killed"]')  # type: ignore[attr-defined]
    killed.wait_for(timeout=3000)
    assert page.locator(f'[data-timer-id="{timer_id}"]').count() == 1  # type: ignore[attr-defined]
    assert "ms after the deadline" in killed.inner_text()
    page.wait_for_function("document.title.startsWith('(1 killed)')", timeout=3000)  # type: ignore[attr-defined]


def test_a_hostile_scope_id_renders_as_text(
    page: object, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    timer_id = arm(service, sleeper.pid, hostile, 120)
    row = page.locator(f'[data-timer-id="{timer_id}"]')  # type: ignore[attr-defined]
    row.wait_for(timeout=5000)
    assert row.locator(".scope").inner_text() == hostile
    assert row.locator("img, script").count() == 0
    assert page.evaluate("window.__pwned") is None  # type: ignore[attr-defined]


def test_the_filter_is_kept_in_the_url(
    page: object, service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    mine, other = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([mine, other])
    mine_id, other_id = arm(service, mine.pid, "mine", 120), arm(service, other.pid, "other", 120)
    page.locator(f'[data-timer-id="{other_id}"]').wait_for(timeout=5000)  # type: ignore[attr-defined]
    page.fill("input[name=pid]", str(mine.pid))  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.locator(f'[data-timer-id="{other_id}"]').wait_for(state="detached", timeout=3000)  # type: ignore[attr-defined]
    assert f"pid={mine.pid}" in page.url  # type: ignore[attr-defined]
    page.reload()  # type: ignore[attr-defined]  # the URL alone restores the filter
    page.evaluate("window.__openedOnce = true")  # type: ignore[attr-defined]
    page.locator(f'[data-timer-id="{mine_id}"]').wait_for(timeout=5000)  # type: ignore[attr-defined]
    assert page.locator(f'[data-timer-id="{other_id}"]').count() == 0  # type: ignore[attr-defined]
    assert page.input_value("input[name=pid]") == str(mine.pid)  # type: ignore[attr-defined]


def test_timer_detail_page_shows_the_timeline(
    browser: object, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(service, sleeper.pid, "detail", 0.5)
    assert wait_dead(sleeper) == -9
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{service.url}/ui/timers/{timer_id}")
    page.locator(f'[data-timer-id="{timer_id}"][data-state="killed"]').wait_for(timeout=5000)
    page.locator('.timeline li[data-kind="killed"]').wait_for(timeout=5000)
    kinds = page.locator(".timeline li").evaluate_all("items => items.map(i => i.dataset.kind)")
    assert kinds == ["acquired", "killed"]
    # The stack captured before the kill is shown, as text.
    page.wait_for_function(
        "document.getElementById('stack-method').textContent.startsWith('Captured with')",
        timeout=5000,
    )
    assert "No stack captured" not in page.inner_text("#stack")
    assert page.locator("#stack *").count() == 0
    page.close()


def test_screenshots_at_1400_and_800_pixels_without_horizontal_scrolling(
    page: object, service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    plans = [
        ("train.py#142 forward", 45),
        ("train.py#188 all_reduce", 6),
        ("loader.py#33 fetch_batch", 300),
        ("eval.py#12", 0.5),
        ("ckpt.py#77 save", 0.8),
    ]
    for scope, seconds in plans:
        process = spawn_sleeper()
        sleepers.append(process)
        arm(service, process.pid, scope, seconds)
    page.locator('[data-state="killed"]').nth(1).wait_for(timeout=5000)  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)  # type: ignore[attr-defined]
    page.set_viewport_size({"width": 800, "height": 900})  # type: ignore[attr-defined]
    page.wait_for_timeout(300)  # type: ignore[attr-defined]
    page.screenshot(path=str(ARTIFACTS / "dashboard-800.png"), full_page=True)  # type: ignore[attr-defined]
    assert page.evaluate("document.documentElement.scrollWidth") <= 800  # type: ignore[attr-defined]
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
