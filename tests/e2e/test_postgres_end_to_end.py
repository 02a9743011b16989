"""The real ``timer-service serve --db-url postgresql+psycopg://...`` on the real
PostgreSQL server: it migrates, arms, kills a real worker, records it all there, and
re-arms after a crash from what PostgreSQL holds."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from app.db.database import make_engine
from tests.app.service_process import ServiceProcess, wait_for_state
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper, wait_dead

NODE = "pg-node"


def on_postgres(workdir: Path, postgres_url: str) -> ServiceProcess:
    service = ServiceProcess(workdir, "--fifo", str(workdir / "timers.fifo"), "--node-name", NODE)
    service.db_url = postgres_url
    return service


@pytest.fixture
def database(postgres_url: str) -> Iterator[Engine]:
    """The test's own PostgreSQL schema, to look at what the service wrote there."""
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def service(tmp_path: Path, postgres_url: str) -> Iterator[ServiceProcess]:
    running = on_postgres(tmp_path, postgres_url).start()
    yield running
    running.stop()


def rows(database: Engine, sql: str, **params: object) -> list[tuple[object, ...]]:
    with database.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), params)]


def test_a_stuck_worker_is_killed_and_everything_is_recorded_in_postgresql(
    service: ServiceProcess, database: Engine, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    stuck, finished = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([stuck, finished])
    armed = httpx.post(
        service.url + "/timers", json={"pid": stuck.pid, "scope_id": "step", "expires_in": 0.5}
    )
    assert armed.status_code == 201
    stuck_id = armed.json()["id"]
    body = {"pid": finished.pid, "scope_id": "step", "expires_in": 60}
    finished_id = httpx.post(service.url + "/timers", json=body).json()["id"]
    released = httpx.post(
        service.url + "/timers/release", json={"pid": finished.pid, "scope_id": "step"}
    )
    assert released.status_code == 200

    assert wait_dead(stuck, 30) == -signal.SIGKILL
    killed = wait_for_state(service.url, stuck.pid, "killed")
    # A fleet id: beyond what PostgreSQL's 32-bit INTEGER could hold.
    assert killed["id"] == stuck_id and stuck_id > 2**31 and killed["node"] == NODE
    listed = httpx.get(service.url + "/timers", params={"state": "killed"}).json()["items"]
    assert [timer["id"] for timer in listed] == [stuck_id]
    assert httpx.get(f"{service.url}/timers/{finished_id}").json()["state"] == "released"
    assert finished.poll() is None

    def kinds(timer_id: int) -> list[str]:
        items = httpx.get(service.url + "/events", params={"timer_id": timer_id}).json()["items"]
        return sorted(item["kind"] for item in items)

    # The kill is recorded by group commit, a moment after the worker dies.
    assert wait_until(lambda: kinds(stuck_id) == ["acquired", "killed"]), kinds(stuck_id)
    assert kinds(finished_id) == ["acquired", "released"]
    # It is all in PostgreSQL (and no SQLite file was made on the side).
    assert rows(database, "SELECT id, state, node FROM timers ORDER BY id") == [
        (stuck_id, "killed", NODE),
        (finished_id, "released", NODE),
    ]
    assert rows(database, "SELECT count(*) FROM events WHERE timer_id = :id", id=stuck_id) == [(2,)]
    assert not (service.workdir / "service.db").exists()
    assert httpx.get(service.url + "/healthz").json()["status"] == "ok"


def test_our_file_client_on_the_fifo_is_killed_with_postgresql(
    service: ServiceProcess, database: Engine
) -> None:
    fifo = str(service.workdir / "timers.fifo")
    code = f"""
        import time
        import timer_core as timer
        timer.configure(timer.FileTimerClient({fifo!r}))
        with timer.expires(after=0.5, scope="fifo-step"):
            time.sleep(60)
    """
    stuck = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)])
    assert_sigkilled(stuck, 30)
    timer = wait_for_state(service.url, stuck.pid, "killed")
    assert timer["source"] == "fifo" and timer["scope_id"] == "fifo-step"
    assert rows(database, "SELECT state FROM timers WHERE id = :id", id=timer["id"]) == [
        ("killed",)
    ]


def test_a_restart_rearms_from_postgresql(
    tmp_path: Path, postgres_url: str, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    worker = spawn_sleeper()
    sleepers.append(worker)
    service = on_postgres(tmp_path, postgres_url).start()
    try:
        body = {"pid": worker.pid, "scope_id": "s", "expires_in": 3}
        armed = httpx.post(service.url + "/timers", json=body)
        assert armed.status_code == 201
        service.crash()
        assert worker.poll() is None
        service.start()  # migrates again (nothing to do), and re-arms the timer
        assert wait_dead(worker, 20) == -signal.SIGKILL
        killed = wait_for_state(service.url, worker.pid, "killed")
        assert killed["id"] == armed.json()["id"]
    finally:
        service.stop()
