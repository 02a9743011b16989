"""An incident's page as another user reads it (issue 25, item 4), in real headless
Chromium (Debian's) whose requests reach the root-run service through a forwarder
running as a second user, so the service sees that user's socket. The incidents are
uid 1000's: that user may read none of their stacks. It is told so plainly, pointed at
nothing hidden, and given no link that would answer 403; the owner's page (root's,
here) links every stack, and each answers."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.app.job_seeds import JobSeed, incident_of, seed
from tests.app.second_user_url import url_as_other_user
from tests.app.service_process import ServiceProcess
from tests.chromium import needs_chromium
from tests.second_user import SERVICE_AS_ROOT

pytestmark = [needs_chromium, *SERVICE_AS_ROOT]

# Rank 2 asleep and killed; rank 3 gave no stack.
HUNG = JobSeed("run-9", first_id=1, missing=3)
# Rank 1 skipped an all_reduce: its collectives are hidden from another user too.
SKIP = JobSeed("run-skip", first_id=11, world_size=3, stuck=1, recorders="skip")
OWNERS_WORDS = "Stacks are visible to the job's owner (uid 1000) and admins"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("incident-other-user")
    seed(workdir / "service.db", HUNG, SKIP)
    running = ServiceProcess(workdir).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def other_user(service: ServiceProcess) -> Iterator[str]:
    """The service's URL as reached from the second user's socket."""
    with url_as_other_user(service.port) as url:
        yield url


def stack_hrefs(page: Page) -> list[str]:
    """Every link on the page to a stack, of a capture or of a timer."""
    hrefs = page.locator("a[href]").evaluate_all("links => links.map(a => a.href)")
    return [href for href in hrefs if re.search(r"/stack$", href)]


@pytest.mark.parametrize("job_id", ["run-9", "run-skip"])
def test_another_user_is_told_plainly_and_given_no_stack_link_it_cannot_open(
    page: Page, service: ServiceProcess, other_user: str, job_id: str
) -> None:
    incident = incident_of(service.url, job_id)
    response = page.goto(f"{other_user}/ui/incidents/{incident['id']}")
    assert response is not None and response.status == 200
    summary = page.locator("#summary")
    assert summary.get_attribute("data-hidden") == "true"
    assert summary.inner_text().startswith(OWNERS_WORDS)
    # Nothing points at a summary that is hidden too.
    text = page.locator("main").inner_text()
    assert "summary above" not in text
    assert "train.py" not in text and "all_reduce" not in text
    notes = page.locator(".frames-hidden").all_inner_texts()
    assert notes and set(notes) == {"Stacks are visible to the job's owner and admins."}
    # Every stack link on the page answers 200 for this reader: there is none, and a
    # note stands where each captured rank's link was.
    for href in stack_hrefs(page):
        assert page.request.get(href).status == 200, href
    assert page.locator("a.stack-link").count() == 0
    captured = sum(1 for rank in incident["ranks"] if rank["stack_method"] is not None)
    private = page.locator(".stack-private")
    assert captured > 0 and private.count() == captured
    assert set(private.all_inner_texts()) == {"full stack: its owner and admins only"}
    # The link it no longer gets would have answered 403.
    rank = next(rank for rank in incident["ranks"] if rank["stack_method"] is not None)
    url = f"{other_user}/incidents/{incident['id']}/captures/{rank['capture_id']}/stack"
    assert page.request.get(url).status == 403
    # What stays open: the suspects, marked, and what opened the incident.
    assert page.locator('.rank-cell[data-suspect="true"]').count() >= 1
    assert page.locator("#opened-by a").inner_text().endswith("'s timer")


def test_the_owners_page_links_every_stack_and_each_answers(
    page: Page, service: ServiceProcess
) -> None:
    incident = incident_of(service.url, "run-9")
    page.goto(f"{service.url}/ui/incidents/{incident['id']}")
    assert not page.locator("#summary").inner_text().startswith("Stacks are visible")
    hrefs = stack_hrefs(page)
    assert len(hrefs) == 3 and page.locator(".stack-private").count() == 0
    for href in hrefs:
        assert page.request.get(href).status == 200, href
