"""The dashboard and a timer's page as an operator reads them (issue 25, item 4), in
real headless Chromium against the real service: one time format everywhere, kills
in a list of their own that releases cannot push out, the job filter, each active
timer's job and rank, and a timer's job, rank, node and incident.

One service for the module, on a database the real recorder filled with a hung job
(tests/app/job_seeds.py: its incident, and its killed rank's timer), so the timer
page's incident link is there without waiting on a real hang. Each test looks only at
the timers it made, or at the seeded job, which no test changes."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page

from app.web.dashboard_text import NOTHING
from tests.app.job_seeds import JobSeed, incident_of, seed
from tests.app.service_process import ServiceProcess
from tests.chromium import needs_chromium
from tests.workers import spawn_sleeper, wait_dead

pytestmark = needs_chromium

HUNG = JobSeed("run-7", first_id=1, world_size=4, stuck=2)
ONE_FORMAT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
# 12-hour clock times as a browser's locale writes them ("4:21:29 AM").
TWELVE_HOUR = re.compile(r"\b\d{1,2}:\d\d(:\d\d)?\s?[AP]\.?M\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("operator-view")
    seed(workdir / "service.db", HUNG)
    running = ServiceProcess(workdir).start()
    yield running
    running.stop()


def arm(service: ServiceProcess, pid: int, scope: str, expires_in: float, **labels: Any) -> int:
    body = {"pid": pid, "scope_id": scope, "expires_in": expires_in, **labels}
    response = httpx.post(service.url + "/timers", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def release(service: ServiceProcess, pid: int, scope: str) -> None:
    response = httpx.post(service.url + "/timers/release", json={"pid": pid, "scope_id": scope})
    assert response.status_code == 200, response.text


def appeared(page: Page, selector: str, timeout: float = 5000) -> Locator:
    found = page.locator(selector)
    found.wait_for(timeout=timeout)
    return found


def times_on(page: Page) -> list[dict[str, str]]:
    """Every ``<time>`` on the page: its text and its datetime attribute."""
    found: list[dict[str, str]] = page.locator("time").evaluate_all(
        "times => times.map(t => ({text: t.textContent, iso: t.getAttribute('datetime')}))"
    )
    return found


def assert_one_time_format(page: Page, at_least: int) -> None:
    """Each time reads YYYY-MM-DD HH:MM:SS UTC and its datetime is the same instant;
    no 12-hour time anywhere in the page's text."""
    shown = times_on(page)
    assert len(shown) >= at_least, shown
    for time in shown:
        assert ONE_FORMAT.fullmatch(time["text"]), time
        instant = datetime.strptime(time["iso"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert instant.strftime("%Y-%m-%d %H:%M:%S UTC") == time["text"], time
    text = page.locator("body").inner_text()
    assert not TWELVE_HOUR.search(text), TWELVE_HOUR.search(text)


def test_every_time_on_the_dashboard_has_one_format_first_paint_and_live(
    page: Page, service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    killed, released = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([killed, released])
    killed_id = arm(service, killed.pid, "formatted-kill", 0.5)
    assert wait_dead(killed) == -9
    released_id = arm(service, released.pid, "formatted-release", 120)
    # The first paint (server-rendered), with scripts off.
    plain = page.context.browser
    assert plain is not None
    context = plain.new_context(java_script_enabled=False)
    try:
        first = context.new_page()
        first.goto(service.url + "/")
        first.locator(f'#kills-table [data-timer-id="{killed_id}"]').wait_for(timeout=5000)
        # The footer's update, the kill, the seeded kill and ends, the nodes' last seen.
        assert_one_time_format(first, at_least=4)
    finally:
        context.close()
    # Live: rows the script builds after the page opened.
    page.goto(service.url + "/")
    release(service, released.pid, "formatted-release")
    row = appeared(page, f'#ends-table [data-timer-id="{released_id}"][data-state="released"]')
    assert ONE_FORMAT.fullmatch(row.locator("time").inner_text())
    page.wait_for_function(
        "[...document.querySelectorAll('#chart title')].length > 0", timeout=5000
    )
    assert_one_time_format(page, at_least=4)
    # The chart's bars name their minute the same way (SVG titles are not <time>).
    tips = page.locator("#chart title").all_text_contents()
    assert tips and all(ONE_FORMAT.match(tip) for tip in tips), tips


def test_every_time_on_a_timer_page_has_one_format(
    page: Page, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(service, sleeper.pid, "a timer page", 0.5)
    assert wait_dead(sleeper) == -9
    page.goto(f"{service.url}/ui/timers/{timer_id}")
    appeared(page, '#timeline li[data-kind="killed"]')
    # The script has redrawn the facts and the timeline from JSON by now.
    page.wait_for_function(
        "document.getElementById('health').textContent === 'connected'", timeout=5000
    )
    # Acquired, deadline, ended, two events of the timeline and the footer.
    assert_one_time_format(page, at_least=6)
    acquired = page.locator("#f-acquired time").get_attribute("datetime")
    timer = httpx.get(f"{service.url}/timers/{timer_id}").json()
    expected = datetime.fromtimestamp(int(timer["acquired_at"]), UTC)
    assert acquired == expected.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_kill_stays_in_view_after_many_releases(
    page: Page, service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    stuck, busy = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([stuck, busy])
    page.goto(service.url + "/")
    killed_id = arm(service, stuck.pid, "the one kill", 0.5)
    assert wait_dead(stuck) == -9
    kill = appeared(page, f'#kills-table [data-timer-id="{killed_id}"][data-state="killed"]')
    # A burst of releases, as a job's ranks send several a second: more than the ends
    # the page lists (100), so the kill has left the list of ends. On one kept-alive
    # connection: each new one costs the service a look-up of its caller.
    with httpx.Client(base_url=service.url) as client:
        for step in range(130):
            body = {"pid": busy.pid, "scope_id": f"step {step}"}
            armed = client.post("/timers", json=body | {"expires_in": 60})
            assert armed.status_code == 201, armed.text
            assert client.post("/timers/release", json=body).status_code == 200
    last = int(armed.json()["id"])
    appeared(page, f'#ends-table [data-timer-id="{last}"][data-state="released"]')
    state = httpx.get(service.url + "/dashboard/state").json()
    assert killed_id not in [row["id"] for row in state["recent_ends"]]
    assert killed_id in [row["id"] for row in state["recent_kills"]]
    assert kill.is_visible()
    assert page.locator(f'[data-timer-id="{killed_id}"]').count() == 1
    assert str(stuck.pid) == kill.locator(".pid").inner_text()
    assert "ms after the deadline" in kill.locator(".reason").inner_text()
    # Its link leads to the timer's page.
    kill.locator("a.scope").click()
    page.wait_for_url(f"{service.url}/ui/timers/{killed_id}")


def test_an_active_timer_shows_its_job_and_rank_and_the_job_filter_filters(
    page: Page, service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    first, second = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([first, second])
    ours = arm(service, first.pid, "train", 120, job_id="filtered-a", rank=1, world_size=2)
    theirs = arm(service, second.pid, "train", 120, job_id="filtered-b", rank=0, world_size=2)
    page.goto(service.url + "/")
    row = appeared(page, f'#active-table [data-timer-id="{ours}"][data-state="active"]')
    assert row.locator(".job").inner_text() == "filtered-a"
    assert row.locator(".job a").get_attribute("href") == "/ui/jobs/filtered-a"
    assert row.locator(".rank").inner_text() == "1/2"
    appeared(page, f'#active-table [data-timer-id="{theirs}"]')
    page.fill("input[name=job]", "filtered-a")
    page.click("button[type=submit]")
    page.locator(f'[data-timer-id="{theirs}"]').wait_for(state="detached", timeout=5000)
    assert "job=filtered-a" in page.url
    assert page.locator(f'#active-table [data-timer-id="{ours}"]').count() == 1
    # Only that job's timers, on the first paint of the URL too.
    assert page.locator("#active-table tbody tr").count() == 1
    page.reload()
    appeared(page, f'#active-table [data-timer-id="{ours}"]')
    assert page.locator(f'[data-timer-id="{theirs}"]').count() == 0
    assert page.input_value("input[name=job]") == "filtered-a"
    # Ends too: releasing the other job's timer does not bring it onto the page.
    release(service, second.pid, "train")
    release(service, first.pid, "train")
    appeared(page, f'#ends-table [data-timer-id="{ours}"][data-state="released"]')
    assert page.locator(f'[data-timer-id="{theirs}"]').count() == 0


def test_a_timer_page_shows_its_job_rank_node_and_incident(
    page: Page, service: ServiceProcess
) -> None:
    stuck_id = HUNG.first_id + 2
    incident = incident_of(service.url, "run-7")
    page.goto(f"{service.url}/ui/timers/{stuck_id}")
    appeared(page, '#timer[data-state="killed"]')
    page.wait_for_function(
        "document.getElementById('health').textContent === 'connected'", timeout=5000
    )
    assert page.inner_text("#f-job") == "run-7"
    assert page.inner_text("#f-rank") == "2 of 4 (local rank 2)"
    assert page.inner_text("#f-node") == HUNG.node
    link = page.locator("#f-incident a.incident-link")
    assert link.count() == 1
    assert ONE_FORMAT.fullmatch(link.locator("time").inner_text())
    link.click()
    page.wait_for_url(f"{service.url}/ui/incidents/{incident['id']}")
    # And the job's link leads to the job's page.
    page.goto(f"{service.url}/ui/timers/{stuck_id}")
    page.locator("#f-job a").click()
    page.wait_for_url(f"{service.url}/ui/jobs/run-7")


def test_a_timer_of_no_job_says_so(
    page: Page, service: ServiceProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    timer_id = arm(service, sleeper.pid, "unlabelled", 120)
    page.goto(f"{service.url}/ui/timers/{timer_id}")
    page.wait_for_function(
        "document.getElementById('health').textContent === 'connected'", timeout=5000
    )
    assert page.inner_text("#f-job") == NOTHING
    assert page.inner_text("#f-rank") == NOTHING
    assert page.inner_text("#f-incident") == NOTHING
    assert (
        page.inner_text("#f-node") == httpx.get(f"{service.url}/timers/{timer_id}").json()["node"]
    )
