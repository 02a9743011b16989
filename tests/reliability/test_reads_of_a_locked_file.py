"""Every read while another process holds the SQLite file in exclusive locking mode,
which in WAL mode locks out readers too (contract 14, issue 26). Nothing had said the
database is away (SQLite has no probe), so each read meets the error itself: the
dashboard still shows the live timers with its banner, ``/metrics`` still answers,
the other reads get 503 JSON, and nothing logs a traceback, nor a line per request or
per heartbeat."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process, service_of, worker_node_of
from tests.waiting import wait_until
from tests.workers import spawn_sleeper

# Every read route that needs the database, pages and JSON alike.
HISTORY_READS = (
    "/timers",
    "/timers/{id}",
    "/timers/{id}/stack",
    "/ui/timers/{id}",
    "/dashboard/timers/{id}",
    "/events",
    "/jobs",
    "/jobs/some-job",
    "/ui/jobs/some-job",
    "/incidents",
    "/incidents/1",
    "/ui/incidents/1",
    "/incidents/1/captures/1/stack",
    "/nodes",
    "/losses",
)


def exclusive_holder(db: Path) -> sqlite3.Connection:
    """A connection holding ``db`` in exclusive locking mode (raises if another
    connection has the file open)."""
    holder = sqlite3.connect(db, isolation_level=None, timeout=0.1)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("COMMIT")  # the lock stays: exclusive locking mode
    except sqlite3.OperationalError:
        holder.close()  # with whatever it took on the way
        raise
    return holder


@contextmanager
def locked_for_readers(client: TestClient, db: Path) -> Iterator[None]:
    """Another connection takes the file in exclusive locking mode. SQLite grants it
    only while no other connection has the file open, so the service's idle pool is
    emptied first (again, if its recorder or heartbeat opened one meanwhile)."""
    deadline = time.monotonic() + 30
    while True:
        service_of(client).engine.dispose()
        try:
            holder = exclusive_holder(db)
            break
        except sqlite3.OperationalError:
            assert time.monotonic() < deadline, "could not lock the database file"
            time.sleep(0.05)
    try:
        yield
    finally:
        holder.close()


def test_reads_of_a_file_locked_for_readers_degrade_without_a_traceback(
    tmp_path: Path,
    sleepers: list[subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = tmp_path / "locked.db"
    # node_timeout 1.5: the node beats every half second, several times while locked.
    settings = Settings(
        db_url=f"sqlite:///{db}", db_busy_timeout=0.2, commit_timeout=1.0, node_timeout=1.5
    )
    with in_process(create_app(settings), raise_server_exceptions=False) as client:
        worker = spawn_sleeper()
        sleepers.append(worker)
        armed = client.post("/timers", json={"pid": worker.pid, "scope_id": "a", "expires_in": 600})
        assert armed.status_code == 201
        timer_id = armed.json()["id"]
        with locked_for_readers(client, db), caplog.at_level(logging.INFO):
            page = client.get("/")
            assert page.status_code == 200, page.text
            assert "History is unavailable" in page.text and "database is locked" in page.text
            assert f'data-timer-id="{timer_id}"' in page.text
            state = client.get("/dashboard/state").json()
            assert "database is locked" in state["history_unavailable"]
            assert [timer["id"] for timer in state["active"]] == [timer_id]
            active = client.get("/timers", params={"state": "active"})
            assert [timer["id"] for timer in active.json()["items"]] == [timer_id]
            metrics = client.get("/metrics")
            assert metrics.status_code == 200 and "timers_active 1.0" in metrics.text
            for path in HISTORY_READS:
                response = client.get(path.format(id=timer_id))
                assert response.status_code == 503, (path, response.text)
                assert "database is locked" in response.json()["detail"], path
            assert client.get("/healthz").status_code == 200
            acknowledge = client.post("/losses/acknowledge")
            assert acknowledge.status_code == 503
            assert "database is locked" in acknowledge.json()["detail"]
            assert "[SQL" not in acknowledge.json()["detail"]  # one line, not SQLAlchemy's
            beat = worker_node_of(client).node_beat
            assert wait_until(lambda: beat.failures >= 3, timeout=10)
        assert wait_until(lambda: "node heartbeat sent again" in caplog.text, timeout=10)
        tracebacks = [record.getMessage() for record in caplog.records if record.exc_info]
        assert not tracebacks
        # Without a probe nothing says when it ends: the reads' errors are one line a minute.
        read_errors = [r for r in caplog.records if "a read failed on the database" in r.message]
        assert len(read_errors) == 1
        # The heartbeat's failures too: one line when they start, one when it beats again.
        assert caplog.text.count("node heartbeat failed") == 1
