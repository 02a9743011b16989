"""A wrong admin token is refused on every route, reads included (401), against the
real service started with ``--token-file``: a user with a typo in the token is told at
the first read, not when a write fails later. Reads without the header stay open
(contract 7), the dashboard among them, and a service with no token configured ignores
the header, as before. The terminal client says so too: exit 4 and the reason."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.cli.client_cli import cli_many
from tests.app.service_process import ServiceProcess
from tests.conftest import in_process
from tests.waiting import wait_until
from tests.workers import spawn_sleeper, wait_dead

TOKEN = "wrong-token-test-7c1f"
RIGHT = {"Authorization": f"Bearer {TOKEN}"}
DETAIL = "missing or wrong token: send 'Authorization: Bearer <token>'"
WRONG_HEADERS = ["Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"]


@dataclass
class Secured:
    service: ServiceProcess
    killed_id: int


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("wrong-token")
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    service = ServiceProcess(workdir, "--token-file", str(token_file)).start()
    worker = spawn_sleeper()
    try:
        # A killed timer, so its stack can be read (200) with the right token.
        body = {"pid": worker.pid, "scope_id": "wrong-token", "expires_in": 0.3}
        armed = httpx.post(service.url + "/timers", json=body, headers=RIGHT)
        assert armed.status_code == 201, armed.text
        assert wait_dead(worker) == -9
        killed_id = armed.json()["id"]
        stack = f"{service.url}/timers/{killed_id}/stack"
        assert wait_until(lambda: httpx.get(stack, headers=RIGHT).status_code == 200, 15)
        yield Secured(service, killed_id)
    finally:
        worker.kill()
        worker.wait()
        service.stop()


def read_paths(secured: Secured) -> list[str]:
    return ["/timers", "/jobs", "/events", "/incidents", f"/timers/{secured.killed_id}/stack"]


@pytest.mark.parametrize("header", WRONG_HEADERS)
def test_a_read_with_a_wrong_token_gets_401_and_says_what_to_send(
    secured: Secured, header: str
) -> None:
    for path in read_paths(secured):
        answer = httpx.get(secured.service.url + path, headers={"Authorization": header})
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json() == {"detail": DETAIL}, path
        assert answer.headers["www-authenticate"] == "Bearer"


def test_a_read_with_the_right_token_or_none_is_answered(secured: Secured) -> None:
    for path in read_paths(secured):
        for headers in (RIGHT, {}):
            answer = httpx.get(secured.service.url + path, headers=headers)
            assert answer.status_code == 200, (path, headers, answer.text)


def test_the_dashboard_and_pages_without_a_header_are_unaffected(secured: Secured) -> None:
    url = secured.service.url
    for path in ("/", f"/ui/timers/{secured.killed_id}", "/healthz", "/docs", "/openapi.json"):
        answer = httpx.get(url + path)
        assert answer.status_code == 200, (path, answer.text[:200])


def test_metrics_still_refuses_a_wrong_token_and_answers_the_right_one_or_none(
    secured: Secured,
) -> None:
    url = secured.service.url + "/metrics"
    wrong = httpx.get(url, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": DETAIL}
    for headers in (RIGHT, {}):
        answer = httpx.get(url, headers=headers)
        assert answer.status_code == 200 and "timers_active" in answer.text


def test_a_write_with_a_wrong_token_is_refused_as_before(secured: Secured) -> None:
    body = {"pid": 1, "scope_id": "s", "expires_in": 60}
    answer = httpx.post(
        secured.service.url + "/timers", json=body, headers={"Authorization": "Bearer wrong"}
    )
    assert answer.status_code == 401 and answer.json() == {"detail": DETAIL}
    missing = httpx.post(secured.service.url + "/timers", json=body)
    assert missing.status_code == 401 and missing.json() == {"detail": DETAIL}


def test_the_client_with_a_wrong_token_exits_4_with_the_reason(secured: Secured) -> None:
    url = ["--url", secured.service.url]
    runs = cli_many(
        {"wrong": ["timers", *url], "right": ["timers", *url], "none": ["timers", *url]},
        envs={"wrong": {"TIMER_SERVICE_TOKEN": "wrong"}, "right": {"TIMER_SERVICE_TOKEN": TOKEN}},
    )
    wrong = runs["wrong"]
    assert wrong.returncode == 4, wrong.stderr
    assert f"the service answered 401 Unauthorized: {DETAIL}" in wrong.stderr
    assert wrong.stdout == "" and "Traceback" not in wrong.stderr
    for name in ("right", "none"):
        assert runs[name].returncode == 0, (name, runs[name].stderr)
        assert "wrong-token" in runs[name].stdout  # the killed timer's scope is listed


@pytest.fixture
def open_service(tmp_path: Path) -> Iterator[TestClient]:
    with in_process(create_app(Settings(db_url=f"sqlite:///{tmp_path / 'open.db'}"))) as client:
        yield client


def test_without_a_token_configured_the_header_is_ignored_as_before(
    open_service: TestClient, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    wrong = {"Authorization": "Bearer wrong"}
    for path in ("/timers", "/jobs", "/events", "/incidents", "/metrics", "/"):
        assert open_service.get(path, headers=wrong).status_code == 200, path
    sleepers.append(worker := spawn_sleeper())
    body = {"pid": worker.pid, "scope_id": "open", "expires_in": 60}
    assert open_service.post("/timers", json=body, headers=wrong).status_code == 201
