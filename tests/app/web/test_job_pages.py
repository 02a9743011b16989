"""The jobs and incidents pages as served (no browser): every link under the root path
the app is served at, 404 pages, and an incident page shown as the API would answer
the same caller (frames hidden from another user)."""

from __future__ import annotations

import re
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

HUNG = JobSeed("run/9", first_id=1)  # a slash in a job id, as torchrun allows


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    database = tmp_path / "timers.db"
    seed(database, HUNG)
    app = create_app(Settings(db_url=f"sqlite:///{database}"))
    with in_process(app, root_path="/ts") as test_client:
        yield test_client


def incident_id(client: TestClient) -> int:
    return int(client.get("/incidents").json()["items"][0]["id"])


def links(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]*)"', html)


def test_every_link_starts_with_the_root_path(client: TestClient) -> None:
    pages = ["/", "/ui/jobs/run/9", f"/ui/incidents/{incident_id(client)}"]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        found = [link for link in links(response.text) if not link.startswith("data:")]
        assert found and all(link.startswith("/ts/") for link in found), (path, found)
    dashboard = client.get("/").text
    assert 'href="/ts/ui/jobs/run/9"' in dashboard
    assert f'href="/ts/ui/incidents/{incident_id(client)}"' in dashboard


@pytest.mark.parametrize("path", ["/ui/jobs/nope", "/ui/incidents/12345"])
def test_unknown_jobs_and_incidents_get_a_404_page(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "not found" in response.text


def test_another_user_sees_the_incident_page_without_frames(client: TestClient) -> None:
    app: Any = client.app
    app.dependency_overrides[current_caller] = lambda: Caller(4242, "tcp", "127.0.0.1:1")
    html = client.get(f"/ui/incidents/{incident_id(client)}").text
    assert "frames hidden: ranks belong to uid 1000" in html
    assert "train.py" not in html and 'class="stack frames"' not in html
    assert html.count('data-suspect="true"') == 1
    assert "train.py" not in client.get("/").text
