"""The job page's scopes in real headless Chromium (Debian's), against the real service
on a history the real recorder wrote: each scope's hold times and suggested timeout,
and its What if form asking the replay of another timeout; a hostile scope id shown
as text."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from playwright.sync_api import Page

from tests.app.hold_history import Hold, record, scope_history
from tests.app.service_process import ServiceProcess
from tests.chromium import needs_chromium
from tests.conftest import migrated_engine

pytestmark = needs_chromium

JOB = "run/7"
HOSTILE_SCOPE = '<img src=x onerror="window.__pwned=1">'
# Thirty steps of 1 to 4 s, then a hang killed after 60 s; a second scope, hostile.
STEPS = [1.0 + (n % 7) / 2 for n in range(30)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("scopes-page")
    engine = migrated_engine(workdir / "service.db")
    holds = [Hold(s) for s in STEPS] + [Hold(60.0, hung=True)]
    record(
        engine,
        scope_history(holds, job=JOB, scope="step", first_id=1)
        + scope_history([Hold(2.0)] * 3, job=JOB, scope=HOSTILE_SCOPE, first_id=100),
    )
    engine.dispose()
    running = ServiceProcess(workdir, "--auto-floor", "2").start()
    yield running
    running.stop()


def test_the_what_if_form_replays_a_timeout_over_the_scope(
    page: Page, service: ServiceProcess
) -> None:
    response = page.goto(f"{service.url}/ui/jobs/{quote(JOB)}")
    assert response is not None and response.status == 200
    row = page.locator('#job-scopes tr[data-scope-id="step"]')
    assert row.locator("td").nth(1).inner_text() == "30"
    # The suggestion, max(floor 2, 3 x p99, 1.5 x max) = 3 x 4 s, fills the form.
    assert row.locator(".suggested").inner_text() == "12"
    field = row.locator('input[name="whatif_timeout"]')
    assert field.input_value() == "12"
    field.fill("3.5")
    row.locator("button").click()
    page.wait_for_load_state()
    answer = page.locator('#job-scopes tr[data-scope-id="step"] .whatif-answer')
    killed = sum(s > 3.5 for s in STEPS)
    assert answer.get_attribute("data-would-have-killed") == str(killed)
    assert answer.get_attribute("data-hung") == "1"
    assert f"would have killed {killed} healthy holds, and caught 1 of 1 hangs" in (
        answer.inner_text()
    )
    # The hostile scope is a row of text, with a form of its own, and no answer.
    hostile = page.locator("#job-scopes tr").filter(has_text=HOSTILE_SCOPE)
    assert hostile.count() == 1
    assert hostile.locator(".whatif-answer").count() == 0
    assert hostile.locator('input[name="whatif_scope"]').input_value() == HOSTILE_SCOPE
