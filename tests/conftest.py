from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.access.callers import Caller, current_caller
from app.db.database import make_engine, migrate
from app.main import create_app
from app.service import Service
from app.settings import Settings
from app.worker_node import WorkerNode
from tests.app.service_process import ServiceProcess
from tests.chromium import browser, page  # noqa: F401 - fixtures for all tests
from tests.mount_namespace_worker import namespaced_user  # noqa: F401 - a fixture for all tests
from tests.postgres import postgres_database, postgres_url  # noqa: F401 - fixtures for all tests
from tests.second_user import second_user, shared_tmp  # noqa: F401 - fixtures for all tests
from tests.workers import spawn_sleeper
from timer_core import ManualClock


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Spawn real sleeping children with ``spawned.append(spawn_sleeper())``;
    every one still alive is killed after the test."""
    spawned: list[subprocess.Popen[bytes]] = []
    yield spawned
    for process in spawned:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def sleeper(sleepers: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    process = spawn_sleeper()
    sleepers.append(process)
    return process


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Service settings on a fresh SQLite file of this test's own."""
    return Settings(db_url=f"sqlite:///{tmp_path / 'timers.db'}", escalate_after=1.0)


def migrated_engine(database: Path | str) -> Engine:
    """An engine on the SQLite file ``database`` (or on a database URL, such as the
    ``postgres_url`` fixture's), with the schema migrated."""
    engine = make_engine(database if isinstance(database, str) else f"sqlite:///{database}")
    migrate(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for a test run on both backends: a fresh SQLite file, then a
    fresh schema on the real PostgreSQL server (skipped if none is reachable)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'timers.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def backend_engine(backend_url: str) -> Iterator[Engine]:
    """A migrated engine on each backend in turn (``backend_url``)."""
    engine = migrated_engine(backend_url)
    yield engine
    engine.dispose()


def in_process(app: FastAPI, **options: Any) -> TestClient:
    """A TestClient for ``app``. Its requests come from this very process, so from the
    service's own uid; with no socket, the kernel lookup cannot say so, so the test
    does. It sends ``Host: localhost``, a name the service answers to. The real
    identity path is tested against the real service process."""
    app.dependency_overrides[current_caller] = lambda: Caller(os.geteuid(), "asgi", "TestClient")
    return TestClient(app, base_url="http://localhost", **options)


def service_of(client: TestClient) -> Service:
    """The Service behind a TestClient of ``create_app``."""
    app = client.app
    assert isinstance(app, FastAPI)
    service: Service = app.state.service
    return service


def worker_node_of(client: TestClient) -> WorkerNode:
    """The worker's node (its reaper, FIFOs, lock and supervisor) behind a TestClient
    of ``create_app``; a hub has none."""
    keeper = service_of(client).keeper
    assert isinstance(keeper, WorkerNode), keeper
    return keeper


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with its lifespan running (reaper, recorder), through TestClient."""
    with in_process(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def manual_clock() -> ManualClock:
    """A ManualClock that starts at the real time: the routes turn ``expires_in`` into a
    unix deadline on the system clock, and the engine holds it on this one."""
    return ManualClock(start_monotonic=time.monotonic(), start_time=time.time())


@pytest.fixture
def manual_client(settings: Settings, manual_clock: ManualClock) -> Iterator[TestClient]:
    """The app on ``manual_clock``: nothing falls due until the test moves the clock and
    steps the reaper (``step_past``). With stack capture off, a kill runs on the thread
    that steps, so what a step does is done when it returns."""
    app = create_app(replace(settings, capture_stacks=False), clock=manual_clock)
    # The loop stamps its runs on the manual clock, so a move of it looks like a stall;
    # the service's remedy for a stall (exit for the supervisor) would end pytest.
    node = app.state.service.keeper
    assert isinstance(node, WorkerNode)
    node.on_stall = lambda: None
    with in_process(app) as test_client:
        yield test_client


def step_past(client: TestClient, clock: ManualClock, deadline: float, by: float = 0.3) -> None:
    """Move ``clock`` to ``by`` seconds past ``deadline`` (unix, as the API answers it)
    and reap what is due then, on this thread. The engine holds a deadline at the same
    distance from both of the clock's readings, so this is exact."""
    clock.advance(deadline - clock.time() + by)
    worker_node_of(client).reaper.step()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The real ``timer-service serve``, with no options but its port and database;
    stopped after the test. A module may define its own, with other options."""
    running = ServiceProcess(tmp_path).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One real ``timer-service serve`` for all of a module's tests that use it, as
    ``service`` starts it. For tests that look only at what they made themselves (their
    own worker's timers, their own log lines) or at what no test changes."""
    running = ServiceProcess(tmp_path_factory.mktemp("shared-service")).start()
    yield running
    running.stop()
