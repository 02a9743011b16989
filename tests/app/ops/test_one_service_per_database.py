"""One live service per database and node (issue 20, item 7): a second real
``timer-service serve`` on the same SQLite file, or with the same ``--node-name`` on one
PostgreSQL schema, exits non-zero with one line naming the first one's pid, and the
first keeps its timers; once the first is killed (SIGKILL: it releases nothing), a new
one takes over and fires the timer it left armed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.app.service_process import ServiceProcess, wait_for_state
from tests.workers import assert_sigkilled, spawn_sleeper


def assert_refused_naming(second: ServiceProcess, first: ServiceProcess, says: str) -> None:
    assert first.process is not None
    done = subprocess.run(second.command(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stderr
    named = [line for line in done.stderr.splitlines() if says in line]
    assert len(named) == 1, done.stderr
    assert f"pid {first.process.pid} " in named[0], named[0]
    assert "Traceback" not in done.stderr


def arm(service: ServiceProcess, pid: int, expires_in: float, status: int = 201) -> int:
    """Arm (201), or move the deadline of the live timer (200), of ``pid``'s scope."""
    response = httpx.post(
        service.url + "/timers", json={"pid": pid, "scope_id": "held", "expires_in": expires_in}
    )
    assert response.status_code == status, response.text
    timer_id: int = response.json()["id"]
    return timer_id


def refuse_then_take_over(
    make: Callable[[], ServiceProcess],
    says: str,
    other_node: ServiceProcess | None = None,
) -> None:
    """The scenario on either backend; ``make`` builds a service on the shared database.
    ``other_node``, if given, must start beside the first one."""
    first = make().start()
    worker = spawn_sleeper()
    try:
        timer_id = arm(first, worker.pid, 300.0)
        assert_refused_naming(make(), first, says)
        if other_node is not None:
            other_node.start().stop()
        # The refused one touched nothing: the first still holds its timer.
        assert wait_for_state(first.url, worker.pid, "active")["id"] == timer_id
        first.crash()
        successor = make().start()
        try:
            # The dead one's timer is re-armed by its successor: a heartbeat moves it
            # (200, the same timer), and it fires on time.
            assert arm(successor, worker.pid, 0.5, status=200) == timer_id
            assert_sigkilled(worker, 30)
            assert wait_for_state(successor.url, worker.pid, "killed")["id"] == timer_id
        finally:
            successor.stop()
    finally:
        first.stop()
        worker.kill()
        worker.wait()


def test_a_second_service_on_one_sqlite_file_is_refused_until_the_first_dies(
    tmp_path: Path,
) -> None:
    refuse_then_take_over(lambda: ServiceProcess(tmp_path), "is in use by another timer-service")
    lock = tmp_path / "service.db.lock"
    assert lock.stat().st_mode & 0o777 == 0o600
    assert "taking over" in (tmp_path / "service.log").read_text()


def test_the_same_node_name_on_one_postgresql_database_is_refused_until_the_first_dies(
    tmp_path: Path, postgres_url: str
) -> None:
    def on_postgres(node: str = "node-a") -> ServiceProcess:
        service = ServiceProcess(tmp_path, "--node-name", node)
        service.db_url = postgres_url
        return service

    # Another node name on the same database is another node: it starts beside it.
    refuse_then_take_over(on_postgres, "node name 'node-a' is in use", on_postgres("node-b"))
