"""An incident's collectives on its page as served (no browser), from a database the
real recorder filled from recorded flight-recorder dumps (rank 1 of three skipped the
fourth all_reduce): the owner sees the table with rank 1 missing from #4; another user
sees the suspect and its rule, but no collective, as the API answers them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.access.callers import Caller, current_caller
from app.main import create_app
from app.settings import Settings
from tests.app.job_seeds import JobSeed, seed
from tests.conftest import in_process

SKIP = JobSeed("run-skip", first_id=1, world_size=3, stuck=1, recorders="skip")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    database = tmp_path / "timers.db"
    seed(database, SKIP)
    app = create_app(Settings(db_url=f"sqlite:///{database}"))
    with in_process(app) as test_client:
        yield test_client


def incident_page(client: TestClient) -> str:
    incident_id = client.get("/incidents").json()["items"][0]["id"]
    response = client.get(f"/ui/incidents/{incident_id}")
    assert response.status_code == 200
    return response.text


def test_the_owner_sees_the_rank_missing_from_the_collective(client: TestClient) -> None:
    html = incident_page(client)
    assert html.count('data-missing="true"') == 1
    assert '<td data-seq="4" class="missing" data-rank="1" data-missing="true">' in html
    assert "rank 1 never joined all_reduce #4 (default group, [8] float32)" in html
    assert 'data-rank="1" data-state="killed" data-suspect="true" data-rule="collective"' in html


def test_another_user_sees_the_suspect_and_its_rule_but_no_collective(
    client: TestClient,
) -> None:
    app: Any = client.app
    app.dependency_overrides[current_caller] = lambda: Caller(4242, "tcp", "127.0.0.1:1")
    html = incident_page(client)
    assert "all_reduce" not in html and 'id="collectives"' not in html
    assert "data-missing" not in html
    assert 'data-suspect="true" data-rule="collective"' in html
    assert 'rank 1 <span class="muted">(collective rule)</span>' in html
