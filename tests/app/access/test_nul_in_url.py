"""A NUL in a URL's path or query is a 422 at the door, on every route (issue 20
review): no job id, scope, node or cursor the service keeps holds one, and PostgreSQL
cannot even compare text with one. Before, ``/timers?job=%00``, ``/events?node=%00``,
``/incidents?job=%00`` and ``/jobs/a%00b`` raised in the driver and answered 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process

URLS = [
    "/timers?scope=%00",
    "/timers?job=a%00b",
    "/timers?node=%00&state=ended",
    "/events?node=%00",
    "/incidents?job=%00",
    "/jobs/a%00b",
    "/ui/jobs/a%00b",
    "/jobs?cursor=%00",
    "/?scope=%00",
    "/dashboard/state?node=%00",
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_nul_in_the_url_is_refused_with_422_everywhere(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'timers.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    with in_process(create_app(Settings(db_url=url)), raise_server_exceptions=False) as client:
        answers = {path: client.get(path) for path in URLS}
        assert {path: answer.status_code for path, answer in answers.items()} == dict.fromkeys(
            URLS, 422
        )
        assert all("NUL" in answer.json()["detail"][0]["msg"] for answer in answers.values())
        # The same routes without the NUL still answer.
        assert client.get("/timers?job=ab").status_code == 200
        assert client.get("/events?node=n").status_code == 200
