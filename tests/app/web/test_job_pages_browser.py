"""The jobs and incidents pages in real headless Chromium (Debian's), against the real
service on a database the real recorder filled: a job's grid of ranks coloured by
state, an incident's groups with the suspect marked, the dashboard's jobs and recent
incidents, and a hostile job id shown as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.app.job_seeds import SLEEPING, JobSeed, incident_of, seed
from tests.app.service_process import ServiceProcess
from tests.chromium import needs_chromium

pytestmark = needs_chromium

HOSTILE_ID = '<script>alert(1)</script><img src=x onerror="window.__pwned=1">'
# Rank 2 asleep and killed, rank 3 no stack: both suspects (nothing shows rank 3 waiting).
HUNG = JobSeed("run-9", first_id=1, missing=3)
HOSTILE = JobSeed(HOSTILE_ID, first_id=11, world_size=2, stuck=1)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("job-pages")
    seed(workdir / "service.db", HUNG, HOSTILE)
    running = ServiceProcess(workdir).start()
    yield running
    running.stop()


def test_a_jobs_page_shows_a_grid_of_its_ranks_coloured_by_state(
    page: Page, service: ServiceProcess
) -> None:
    response = page.goto(f"{service.url}/ui/jobs/run-9")
    assert response is not None and response.status == 200
    cells = page.locator("#ranks [data-rank]")
    assert cells.count() == 4
    states = {
        cells.nth(n).get_attribute("data-rank"): cells.nth(n).get_attribute("data-state")
        for n in range(4)
    }
    assert states == {"0": "active", "1": "active", "2": "killed", "3": "active"}
    killed = page.locator('[data-rank="2"][data-state="killed"]')
    colour = killed.evaluate("cell => getComputedStyle(cell).borderTopColor")
    active = page.locator('[data-rank="0"]').evaluate(
        "cell => getComputedStyle(cell).borderTopColor"
    )
    assert colour != active
    # Each cell leads to its timer.
    killed.click()
    page.wait_for_url(f"{service.url}/ui/timers/3")
    page.locator('#timer[data-state="killed"]').wait_for(timeout=5000)


def test_a_jobs_page_lists_its_incidents(page: Page, service: ServiceProcess) -> None:
    incident = incident_of(service.url, "run-9")
    page.goto(f"{service.url}/ui/jobs/run-9")
    row = page.locator(f'#job-incidents [data-incident-id="{incident["id"]}"]')
    assert row.locator(".summary").inner_text() == incident["summary"]
    row.locator(".summary a").click()
    page.wait_for_url(f"{service.url}/ui/incidents/{incident['id']}")


def test_an_incident_page_shows_the_summary_then_groups_with_the_suspect_marked(
    page: Page, service: ServiceProcess
) -> None:
    incident = incident_of(service.url, "run-9")
    page.goto(f"{service.url}/ui/incidents/{incident['id']}")
    summary = page.locator("#summary")
    assert summary.inner_text() == incident["summary"]
    assert summary.inner_text().startswith("rank 2 stuck in step (train.py:6)")
    suspects = page.locator('[data-rank][data-suspect="true"]')
    assert suspects.count() == 2
    assert [suspects.nth(n).get_attribute("data-rank") for n in range(2)] == ["2", "3"]
    assert page.locator("[data-rank]").count() == 4
    # The suspect's group shows its frames; the summary comes before every group.
    group = page.locator(".group", has=page.locator('[data-rank="2"]'))
    assert "step (train.py:6)" in group.locator(".frames").inner_text()
    assert summary.bounding_box()["y"] < group.bounding_box()["y"]  # type: ignore[index]
    assert "no stack" in page.locator('[data-rank="3"]').inner_text()
    # How each rank's evidence was taken: py-spy for rank 2, nothing for rank 3.
    evidence = page.locator('[data-rank="2"] .evidence')
    assert evidence.inner_text() == "evidence: py-spy"
    assert evidence.get_attribute("data-method") == "py-spy"
    assert page.locator('[data-rank="3"] .evidence').count() == 0
    # Each captured rank links to its full stack.
    link = page.locator('[data-rank="2"] a.stack-link')
    stack = page.request.get(service.url + str(link.get_attribute("href")))
    assert stack.status == 200 and stack.text() == SLEEPING


def test_the_dashboard_lists_jobs_and_recent_incidents(page: Page, service: ServiceProcess) -> None:
    page.goto(service.url + "/")
    rows = page.locator("#jobs-table tbody tr")
    assert rows.count() == 2
    run = page.locator('#jobs-table tr[data-job-id="run-9"]')
    cells = [run.locator("td").nth(n).inner_text() for n in range(6)]
    assert cells == ["run-9", "4", "4", "3", "node-a", "1"]
    incident = incident_of(service.url, "run-9")
    recent = page.locator(f'#incidents-table tr[data-incident-id="{incident["id"]}"]')
    assert recent.locator(".summary").inner_text() == incident["summary"]
    run.locator("a.job-id").click()
    page.wait_for_url(f"{service.url}/ui/jobs/run-9")


def test_a_hostile_job_id_is_shown_as_text_everywhere(page: Page, service: ServiceProcess) -> None:
    page.goto(service.url + "/")
    row = page.locator("#jobs-table tbody tr").filter(has_text="<script>")
    assert row.get_attribute("data-job-id") == HOSTILE_ID
    link = row.locator("a.job-id")
    assert link.get_attribute("title") == HOSTILE_ID
    assert page.locator("main script, main img").count() == 0
    link.click()
    page.locator("#job-id").wait_for()
    assert page.locator("#job-id").inner_text() == HOSTILE_ID
    assert page.locator("#ranks [data-rank]").count() == 2
    assert page.locator("main script, main img").count() == 0
    page.locator("#job-incidents .summary a").click()
    page.locator("#summary").wait_for()
    assert page.locator("#incident .job-id").inner_text() == HOSTILE_ID
    assert page.locator('[data-suspect="true"]').get_attribute("data-rank") == "1"
    assert page.locator("main script, main img").count() == 0


@pytest.mark.parametrize("path", ["/ui/jobs/nope", "/ui/incidents/999"])
def test_an_unknown_job_or_incident_gets_a_404_page(
    page: Page, service: ServiceProcess, path: str
) -> None:
    response = page.goto(service.url + path)
    assert response is not None and response.status == 404
    assert "not found" in page.locator("main h2").inner_text()


def test_screenshots(page: Page, service: ServiceProcess) -> None:
    artifacts = Path(__file__).parents[3] / "artifacts"
    artifacts.mkdir(exist_ok=True)
    incident = incident_of(service.url, "run-9")
    for name, path in [("job", "/ui/jobs/run-9"), ("incident", f"/ui/incidents/{incident['id']}")]:
        page.goto(service.url + path)
        page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400
