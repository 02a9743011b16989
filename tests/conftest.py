from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.second_user import second_user, shared_tmp  # noqa: F401 - fixtures for all tests
from tests.workers import spawn_sleeper


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


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with its lifespan running (reaper, recorder), through TestClient."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client
