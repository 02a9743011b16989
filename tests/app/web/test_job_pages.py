"""The jobs and incidents pages as served (no browser): every link under the root path
the app is served at, 404 pages, and an incident page shown as the API would answer
the same caller (frames hidden from another user)."""

from __future__ import annotations

import re
import sqlite3
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
    # The job id is one segment, its slash escaped (test_job_links), and the link answers.
    assert 'href="/ts/ui/jobs/run%2F9"' in dashboard
    assert client.get("/ui/jobs/run%2F9").status_code == 200
    assert f'href="/ts/ui/incidents/{incident_id(client)}"' in dashboard


@pytest.mark.parametrize("path", ["/ui/jobs/nope", "/ui/incidents/12345"])
def test_unknown_jobs_and_incidents_get_a_404_page(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "not found" in response.text


def as_caller(client: TestClient, uid: int | None) -> None:
    app: Any = client.app
    app.dependency_overrides[current_caller] = lambda: Caller(uid, "tcp", "127.0.0.1:1")


def stack_links(html: str) -> list[str]:
    return re.findall(r'<a class="stack-link" href="([^"]*)"', html)


def test_another_user_sees_the_incident_page_without_frames(client: TestClient) -> None:
    as_caller(client, 4242)
    html = client.get(f"/ui/incidents/{incident_id(client)}").text
    assert "train.py" not in html and 'class="stack frames"' not in html
    assert html.count('data-suspect="true"') == 1
    assert "train.py" not in client.get("/").text
    # Said plainly, once, pointing at nothing that is hidden too.
    assert "Stacks are visible to the job&#39;s owner (uid 1000) and admins" in html
    assert "summary above" not in html
    # No link to a stack this reader would get a 403 for: a note in its place.
    assert stack_links(html) == []
    assert html.count('class="muted stack-private"') == 4


def test_a_caller_the_service_cannot_identify_is_told_how_to_be(client: TestClient) -> None:
    as_caller(client, None)
    html = client.get(f"/ui/incidents/{incident_id(client)}").text
    assert "the service cannot tell who you are" in html and "--uds" in html
    assert stack_links(html) == [] and "train.py" not in html


def test_the_jobs_owner_gets_every_stack_linked_and_each_answers(client: TestClient) -> None:
    as_caller(client, 1000)
    html = client.get(f"/ui/incidents/{incident_id(client)}").text
    assert "summary above" not in html and "stack-private" not in html
    found = stack_links(html)
    assert len(found) == 4
    for link in found:
        assert client.get(link.removeprefix("/ts")).status_code == 200, link


def test_a_stack_is_linked_to_a_reader_who_may_read_that_one_only(
    client: TestClient, tmp_path: Path
) -> None:
    """One capture of another uid (4242) in uid 1000's incident: 4242 still gets the
    frames hidden (it may not read the others), and a link to its own stack only."""
    with sqlite3.connect(tmp_path / "timers.db") as database:
        database.execute("UPDATE incident_captures SET uid = 4242 WHERE rank = 0")
    as_caller(client, 4242)
    html = client.get(f"/ui/incidents/{incident_id(client)}").text
    assert "train.py" not in html and "Stacks are visible to the job" in html
    [link] = stack_links(html)
    assert client.get(link.removeprefix("/ts")).status_code == 200
    assert html.count('class="muted stack-private"') == 3
    rank_0 = html[html.index('data-rank="0"') :]
    assert rank_0.index(link) < rank_0.index("</li>")
