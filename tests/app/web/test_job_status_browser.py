"""A job's page and an incident's page as an operator reads them (issue 25, item 4), in
real headless Chromium (Debian's) against the real service, on a database the real
recorder filled:

- the job's status, one job of each (hung, running, finished, and a hung job that
  restarted), as app/web/job_status.py defines them;
- the suspects of the current incident marked in the grid, and named as ranks;
- on the incident page, only the suspects red: another killed rank is neutral;
- what opened the incident, in words, linking the timer.

What another user sees of the incident is in test_incident_page_other_user_browser.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Locator, Page

from tests.app.job_seeds import BASE, JobSeed, incident_of, seed
from tests.app.service_process import ServiceProcess
from tests.chromium import needs_chromium
from timer_core import EventKind, TimerEvent

pytestmark = needs_chromium

# Rank 2 asleep and killed, rank 3 gave no stack: the suspects. Rank 0 waited in
# all_reduce and was killed after them (as torchrun takes a hung job's ranks down).
HUNG = JobSeed("run-hung", first_id=1, missing=3)
RUNNING = JobSeed("run-running", first_id=21, stuck=None)
FINISHED = JobSeed("run-finished", first_id=41, stuck=None)
# Hung (rank 2 killed), then restarted: every rank runs a new timer.
RESTARTED_HUNG = JobSeed("run-restarted", first_id=61)
RESTARTED = JobSeed("run-restarted", first_id=71, stuck=None, at=BASE + 100)


def releases(job: JobSeed) -> list[TimerEvent]:
    return [
        job.labelled(EventKind.RELEASED, rank, "released", job.at + 20 + rank)
        for rank in range(job.world_size)
    ]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("job-status")
    seed(
        workdir / "service.db",
        HUNG,
        HUNG.labelled(EventKind.KILLED, 0, "killed", BASE + 10.2),
        RUNNING,
        FINISHED,
        *releases(FINISHED),
        RESTARTED_HUNG,
        # The restart's first step: the old ranks still running are killed.
        *(
            RESTARTED_HUNG.labelled(EventKind.KILLED, rank, "killed", BASE + 11)
            for rank in (0, 1, 3)
        ),
        RESTARTED,
    )
    running = ServiceProcess(workdir).start()
    yield running
    running.stop()


def style(cell: Locator, prop: str) -> str:
    return str(cell.evaluate(f"cell => getComputedStyle(cell).{prop}"))


def test_the_grid_marks_the_suspects_of_the_hung_jobs_incident(
    page: Page, service: ServiceProcess
) -> None:
    page.goto(f"{service.url}/ui/jobs/run-hung")
    suspects = page.locator('#ranks .rank-cell[data-suspect="true"]')
    assert [suspects.nth(n).get_attribute("data-rank") for n in range(suspects.count())] == [
        "2",
        "3",
    ]
    # Visibly: a word in the cell and an outline, which a killed rank that is no
    # suspect (rank 0) has neither of.
    for number in ("2", "3"):
        mark = page.locator(f'#ranks [data-rank="{number}"] .rank-suspect')
        assert mark.is_visible() and (mark.text_content() or "").strip() == "suspect"
    killed = page.locator('#ranks [data-rank="0"]')
    assert killed.get_attribute("data-state") == "killed"
    assert killed.get_attribute("data-suspect") is None
    assert killed.locator(".rank-suspect").count() == 0
    suspect = page.locator('#ranks [data-rank="2"]')
    assert style(suspect, "outlineStyle") == "solid"
    assert style(killed, "outlineStyle") == "none"
    # Ranks named as ranks, never a bare number that reads as a count.
    assert page.locator("#job-suspects").inner_text().startswith("ranks 2, 3")
    incident = incident_of(service.url, "run-hung")
    row = page.locator(f'#job-incidents tr[data-incident-id="{incident["id"]}"]')
    assert row.locator("td").nth(1).inner_text() == "ranks 2, 3"


@pytest.mark.parametrize(
    ("job_id", "status", "why"),
    [
        (
            "run-hung",
            "hung",
            "the latest timers of ranks 0, 2 ran out (killed); no new timers have replaced them",
        ),
        ("run-running", "running", "4 active timers"),
        ("run-finished", "finished", "no active timers: every rank released its last one"),
        ("run-restarted", "running", "4 active timers"),
    ],
)
def test_a_job_shows_its_status(
    page: Page, service: ServiceProcess, job_id: str, status: str, why: str
) -> None:
    page.goto(f"{service.url}/ui/jobs/{job_id}")
    shown = page.locator("#job-status")
    assert shown.get_attribute("data-status") == status
    badge = shown.locator(".badge")
    assert badge.is_visible() and badge.inner_text() == status
    assert shown.locator(".status-why").inner_text() == why
    if status != "hung":
        # Nothing is marked: a restarted job's old suspects are its incident's history.
        assert page.locator('[data-suspect="true"]').count() == 0
        assert page.locator("#job-suspects").count() == 0
        assert page.locator("#job-status-incident").count() == 0


def test_the_statuses_look_different(page: Page, service: ServiceProcess) -> None:
    colours = set()
    for job_id in ("run-hung", "run-running", "run-finished"):
        page.goto(f"{service.url}/ui/jobs/{job_id}")
        colours.add(style(page.locator("#job-status .badge"), "color"))
    assert len(colours) == 3


def test_a_hung_jobs_status_leads_to_its_incident(page: Page, service: ServiceProcess) -> None:
    incident = incident_of(service.url, "run-hung")
    page.goto(f"{service.url}/ui/jobs/run-hung")
    page.locator("#job-status-incident").click()
    page.wait_for_url(f"{service.url}/ui/incidents/{incident['id']}")


def test_on_the_incident_page_only_the_suspect_is_red(page: Page, service: ServiceProcess) -> None:
    incident = incident_of(service.url, "run-hung")
    page.goto(f"{service.url}/ui/incidents/{incident['id']}")
    suspect = page.locator('.rank-cell[data-rank="2"]')
    killed = page.locator('.rank-cell[data-rank="0"]')
    captured = page.locator('.rank-cell[data-rank="1"]')
    assert suspect.get_attribute("data-state") == killed.get_attribute("data-state") == "killed"
    assert suspect.get_attribute("data-suspect") == "true"
    assert killed.get_attribute("data-suspect") is None
    for prop in ("backgroundColor", "borderTopColor"):
        assert style(suspect, prop) != style(killed, prop), prop
        # The other killed rank is as neutral as one that was only captured.
        assert style(killed, prop) == style(captured, prop), prop
    killed_badge = killed.locator(".badge.outcome")
    assert killed_badge.inner_text() == "killed"
    assert style(killed_badge, "color") != style(suspect.locator(".badge.outcome"), "color")
    assert suspect.locator(".badge.suspect").inner_text() == "suspect"
    assert killed.locator(".badge.suspect").count() == 0


def test_the_incident_says_what_opened_it_and_links_the_timer(
    page: Page, service: ServiceProcess
) -> None:
    incident = incident_of(service.url, "run-hung")
    assert incident["trigger_timer_id"] == 3
    page.goto(f"{service.url}/ui/incidents/{incident['id']}")
    opened = page.locator("#opened-by")
    assert (
        opened.inner_text()
        == ", when rank 2's timer (scope step-2, pid 502) expired on node node-a"
    )
    assert "timer 3" not in page.locator("#incident").inner_text()
    opened.locator("a").click()
    page.wait_for_url(f"{service.url}/ui/timers/3")
    page.locator('#timer[data-state="killed"]').wait_for(timeout=5000)
