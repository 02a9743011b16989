"""A job is its id and its owner (contracts 8 and 12): two users' workers labelled with
the same job id are two jobs. ``GET /jobs/{id}?uid=`` shows each one's own slowdowns,
and the job page each one's own scopes and slowdowns; without ``?uid=``, a caller who
owns neither gets the 409 page, with no one's scopes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.hold_history import Hold, record, scope_history
from tests.app.ops.test_stragglers import release
from tests.conftest import in_process, migrated_engine, service_of

JOB = "shared"
ALICE = 4001
MALLORY = 4002


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    database = tmp_path / "timers.db"
    engine = migrated_engine(database)
    record(
        engine,
        scope_history([Hold(1.0)] * 3, job=JOB, scope="alice-step", first_id=1, uid=ALICE)
        + scope_history([Hold(5.0)] * 3, job=JOB, scope="mallory-step", first_id=10, uid=MALLORY),
    )
    engine.dispose()
    settings = Settings(db_url=f"sqlite:///{database}", straggler_window=5)
    with in_process(create_app(settings)) as test_client:
        # What the service's straggler detector has seen of each one's ranks 0 and 1:
        # Alice's at one pace, Mallory's rank 0 three times slower, in the same scope.
        stragglers = service_of(test_client).stragglers
        for _ in range(5):
            for uid, paces in ((ALICE, (1.0, 1.0)), (MALLORY, (3.0, 1.0))):
                for rank, pace in enumerate(paces):
                    stragglers(release(rank, pace, job=JOB, scope="compute", uid=uid))
        yield test_client


def test_each_owners_job_shows_its_own_slowdowns(client: TestClient) -> None:
    for uid, slowdown in ((ALICE, 1.0), (MALLORY, 3.0)):
        response = client.get(f"/jobs/{JOB}", params={"uid": uid})
        assert response.status_code == 200, response.text
        assert [(r["rank"], r["slowdown"]) for r in response.json()["ranks"]] == [
            (0, pytest.approx(slowdown))
        ]
    assert client.get(f"/jobs/{JOB}").status_code == 409


def test_each_owners_job_page_shows_its_own_scopes_and_stragglers(client: TestClient) -> None:
    alice = client.get(f"/ui/jobs/{JOB}", params={"uid": ALICE}).text
    mallory = client.get(f"/ui/jobs/{JOB}", params={"uid": MALLORY}).text
    assert re.findall(r'data-scope-id="([^"]*)"', alice) == ["alice-step"]
    assert re.findall(r'data-scope-id="([^"]*)"', mallory) == ["mallory-step"]
    assert 'data-straggler="true"' not in alice
    assert re.findall(r'data-rank="(\d)"[^>]*data-straggler="true"', mallory) == ["0"]
    # Neither's: the page says whose to choose, and shows no one's scopes.
    several = client.get(f"/ui/jobs/{JOB}")
    assert several.status_code == 409
    assert "data-scope-id" not in several.text
