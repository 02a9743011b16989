"""``POST /fifos``: the caller's own FIFO, for the uid the kernel reports."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.access.callers import Caller, current_caller
from app.main import create_app
from app.settings import Settings
from app.web.routers import fifos
from tests.conftest import in_process

ME = os.geteuid()


def with_fifos_route(app: FastAPI) -> FastAPI:
    # app/main.py includes the router; until it does, the test does.
    if not any(getattr(route, "path", None) == "/fifos" for route in app.routes):
        app.include_router(fifos.router)
    return app


@pytest.fixture
def fifo_dir(tmp_path: Path) -> Path:
    return tmp_path / "fifos"


@pytest.fixture
def app(settings: Settings, fifo_dir: Path) -> FastAPI:
    return with_fifos_route(create_app(replace(settings, fifo_dir=str(fifo_dir))))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with in_process(app) as test_client:
        yield test_client


def test_the_first_call_makes_the_callers_fifo_and_the_next_returns_it(
    client: TestClient, fifo_dir: Path
) -> None:
    made = client.post("/fifos")
    assert made.status_code == 201
    path = made.json()["path"]
    assert path == str(fifo_dir / str(ME))
    found = os.lstat(path)
    assert stat.S_ISFIFO(found.st_mode) and found.st_uid == ME
    assert stat.S_IMODE(found.st_mode) == 0o600
    again = client.post("/fifos")
    assert (again.status_code, again.json()) == (200, {"path": path})


@pytest.mark.skipif(ME != 0, reason="a FIFO for another uid needs root")
def test_the_uid_comes_from_the_connection_not_the_request(
    app: FastAPI, client: TestClient, fifo_dir: Path
) -> None:
    app.dependency_overrides[current_caller] = lambda: Caller(54321, "tcp", "127.0.0.1:4000")
    answer = client.post("/fifos", params={"uid": ME}, json={"uid": ME})
    assert answer.status_code == 201
    assert answer.json()["path"] == str(fifo_dir / "54321")
    assert os.lstat(fifo_dir / "54321").st_uid == 54321
    assert not (fifo_dir / str(ME)).exists()


def test_an_unidentified_caller_gets_403_saying_why(app: FastAPI, client: TestClient) -> None:
    app.dependency_overrides[current_caller] = lambda: Caller(None, "remote", "192.0.2.7:4000")
    answer = client.post("/fifos")
    assert answer.status_code == 403
    detail = answer.json()["detail"]
    assert "cannot tell who you are" in detail and "loopback or the Unix socket" in detail


def test_without_a_fifo_dir_the_answer_is_409(settings: Settings) -> None:
    with in_process(with_fifos_route(create_app(settings))) as client:
        answer = client.post("/fifos")
    assert answer.status_code == 409
    assert "start the service with --fifo-dir" in answer.json()["detail"]


def test_with_a_token_set_the_write_needs_it(settings: Settings, fifo_dir: Path) -> None:
    guarded = replace(settings, fifo_dir=str(fifo_dir), token="s3cret")
    with in_process(with_fifos_route(create_app(guarded))) as client:
        assert client.post("/fifos").status_code == 401
        authorized = client.post("/fifos", headers={"authorization": "Bearer s3cret"})
        assert authorized.status_code == 201


def test_fifo_dir_and_users_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMER_SERVICE_FIFO_DIR", "/run/timer-service/fifos")
    monkeypatch.setenv("TIMER_SERVICE_FIFO_USERS", "alice,1001")
    settings = Settings.from_env()
    assert (settings.fifo_dir, settings.fifo_users) == ("/run/timer-service/fifos", "alice,1001")
    assert Settings.from_env(fifo_dir="/elsewhere").fifo_dir == "/elsewhere"
