"""An incident's collectives in real headless Chromium (Debian's), against the real
service on a database the real recorder filled from recorded flight-recorder dumps of a
hung torchrun job (``tests/timer_core/diagnosis/collectives/skip``: rank 1 skipped the
fourth all_reduce of three ranks): the rank missing from that collective is marked in
its group's table, the finding is a sentence, the suspect says its rule; and an op name
and group description a worker wrote into its recorder are shown as text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.app.job_seeds import JobSeed, incident_of, seed
from tests.app.service_process import ServiceProcess
from tests.chromium import needs_chromium

pytestmark = needs_chromium

ARTIFACTS = Path(__file__).parents[3] / "artifacts"
DUMPS = Path(__file__).parents[2] / "timer_core" / "diagnosis" / "collectives"
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
# Rank 1 asleep (it skipped #4) and killed; ranks 0 and 2 wait in all_reduce #4.
SKIP = JobSeed("run-skip", first_id=1, world_size=3, stuck=1, recorders="skip")


def hostile_dumps(directory: Path) -> Path:
    """The skip dumps with every op and group description replaced by markup."""
    directory.mkdir()
    for source in sorted((DUMPS / "skip").glob("rank*.json")):
        dump = json.loads(source.read_text())
        for entry in dump["entries"]:
            entry["profiling_name"] = "gloo:" + HOSTILE
            entry["process_group"][1] = HOSTILE
        (directory / source.name).write_text(json.dumps(dump))
    return directory


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("incident-collectives")
    # An absolute directory: the seed reads each rank's dump from there.
    dumps = hostile_dumps(workdir / "hostile-dumps")
    hostile = JobSeed("run-hostile", first_id=11, world_size=3, stuck=1, recorders=str(dumps))
    seed(workdir / "service.db", SKIP, hostile)
    running = ServiceProcess(workdir).start()
    yield running
    running.stop()


def test_the_rank_that_skipped_a_collective_is_marked_missing_from_it(
    page: Page, service: ServiceProcess
) -> None:
    incident = incident_of(service.url, "run-skip")
    page.goto(f"{service.url}/ui/incidents/{incident['id']}")
    missing = page.locator('[data-missing="true"]')
    assert missing.count() == 1
    assert missing.get_attribute("data-rank") == "1"
    assert missing.get_attribute("data-seq") == "4"
    assert missing.is_visible()
    # In the default group's table, in the row of rank 1, under #4.
    table = page.locator('table.collectives[data-pg="0"]')
    assert table.locator("caption").inner_text() == "default group"
    assert table.locator('[data-missing="true"]').count() == 1
    row = table.locator('tr[data-row-rank="1"]')
    assert row.locator('[data-missing="true"]').inner_text() == "missing"
    assert "3 / 3" in row.inner_text()
    waiting = table.locator('tr[data-row-rank="0"] td[data-seq="4"]')
    assert waiting.inner_text() == "all_reduce [8] float32 scheduled"
    finding = page.locator(".collective-finding")
    assert finding.all_inner_texts() == [
        "rank 1 never joined all_reduce #4 (default group, [8] float32); ranks 0, 2 wait in it"
    ]
    # The suspect, and the rule that named it; the summary starts with the finding.
    suspect = page.locator('.rank-cell[data-suspect="true"]')
    assert suspect.count() == 1
    assert suspect.get_attribute("data-rank") == "1"
    assert suspect.get_attribute("data-rule") == "collective"
    assert page.locator('#suspects [data-rule="collective"]').inner_text() == (
        "rank 1 (collective rule)"
    )
    assert page.locator("#summary").inner_text() == incident["summary"]
    assert incident["summary"].startswith("rank 1 never joined all_reduce #4")
    # The collectives come before the groups of stacks.
    collectives = page.locator("#collectives").bounding_box()
    group = page.locator(".group").first.bounding_box()
    assert collectives is not None and group is not None and collectives["y"] < group["y"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "incident-collectives.png"), full_page=True)


def test_an_op_name_and_group_a_worker_wrote_are_shown_as_text(
    page: Page, service: ServiceProcess
) -> None:
    incident = incident_of(service.url, "run-hostile")
    page.goto(f"{service.url}/ui/incidents/{incident['id']}")
    assert page.locator('[data-missing="true"]').get_attribute("data-rank") == "1"
    ops = page.locator("table.collectives .op").all_inner_texts()
    assert ops and set(ops) == {HOSTILE}
    assert page.locator("table.collectives caption").inner_text() == f"group {HOSTILE}"
    assert HOSTILE in page.locator(".collective-finding").inner_text()
    assert page.locator("main script, main img").count() == 0
