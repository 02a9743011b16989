"""DatabaseStatus and what reads from it (contract 14), on the service's own SQLite
engine: the outage is declared through the same ``failed`` a read's error calls, the
real PostgreSQL faults are in tests/reliability/test_database_away.py."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest
from fastapi.testclient import TestClient

from app.db.database_status import DatabaseStatus, has_password, masked_url
from tests.conftest import service_of


def test_a_password_is_masked_and_an_unparsable_url_shows_nothing() -> None:
    shown = masked_url("postgresql+psycopg://root:SECRETPW@db.example/timers")
    assert shown == "postgresql+psycopg://root:***@db.example/timers"
    assert "SECRETPW" not in masked_url("not a url :SECRETPW@")


def test_which_urls_carry_a_password() -> None:
    # What the start's warning about ps is decided by (an unparsable URL may hold one).
    assert has_password("postgresql+psycopg://root:SECRETPW@db.example/timers")
    assert not has_password("postgresql+psycopg://root@/timers?host=/run/postgresql")
    assert not has_password("sqlite:///./timer-service.db")
    assert has_password("not a url :SECRETPW@")


def test_a_batch_waiting_past_the_patience_is_a_database_that_hangs(
    client: TestClient,
) -> None:
    engine = service_of(client).engine
    started = time.monotonic() - 4.0
    status = DatabaseStatus(engine, busy_since=lambda: started)
    assert status.problem() is not None and "not answered for 4.0 s" in str(status.problem())
    assert status.problem(hang_after=10.0) is None


def test_an_outage_logs_once_and_its_end_runs_the_callbacks(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    status = DatabaseStatus(service_of(client).engine)
    returned: list[bool] = []
    status.on_return(lambda: returned.append(True))
    with caplog.at_level(logging.WARNING, logger="app.database_status"):
        for _ in range(5):
            status.failed("connection refused")
        status.probe()  # SQLite answers: the outage ends
    lines = [record.getMessage() for record in caplog.records]
    assert sum("the database is unavailable" in line for line in lines) == 1
    assert sum("answers again" in line for line in lines) == 1
    assert returned == [True] and status.problem() is None


def test_while_away_active_timers_page_from_the_engine_and_history_is_503(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    worker = sleeper
    ids = []
    for scope in ("a", "b", "c"):
        armed = client.post(
            "/timers", json={"pid": worker.pid, "scope_id": scope, "expires_in": 600}
        )
        ids.append(armed.json()["id"])
    service_of(client).database.failed("test outage")
    first = client.get("/timers", params={"state": "active", "pid": worker.pid, "limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [t["id"] for t in page["items"]] == sorted(ids, reverse=True)[:2]
    rest = client.get(
        "/timers", params={"state": "active", "pid": worker.pid, "cursor": page["next"]}
    ).json()
    assert [t["id"] for t in rest["items"]] == [min(ids)] and rest["next"] is None
    one = client.get("/timers", params={"state": "active", "scope": "b"}).json()["items"]
    assert [t["scope_id"] for t in one] == ["b"]
    elsewhere = client.get("/timers", params={"state": "active", "node": "another-node"})
    assert elsewhere.status_code == 503
    history = client.get("/timers", params={"state": "released"})
    assert history.status_code == 503 and "GET /timers?state=active" in history.json()["detail"]
    write = client.post("/timers/release", json={"pid": worker.pid, "scope_id": "a"})
    assert write.status_code == 202 and write.json()["timer"]["scope_id"] == "a"
    deleted = client.delete(f"/timers/{max(ids)}")
    assert deleted.status_code == 202 and deleted.json()["recorded"] is False
    assert "the timer is released" in deleted.json()["detail"]
    # A timer this engine does not hold is only in the database: not waited for, 503.
    unknown = client.delete("/timers/999999")
    assert unknown.status_code == 503 and "database" in unknown.json()["detail"]
    assert client.get("/healthz").json()["database"]["up"] is False
