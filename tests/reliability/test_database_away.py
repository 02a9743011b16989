"""The real service on a PostgreSQL server of the test's own (tests/private_postgres.py),
which is stopped, hung and cut off under load (contract 14, issue 26).

The issue's outage was 30 s; these use 12 s (stopped) and 6 s (hung): every bound
checked here (a write answered within a second, degraded within 10 s, back within 5 s
of the return) is measured from the fault's start or end, so a longer outage only
repeats the same seconds, and the suite stays fast.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess
from tests.private_postgres import PASSWORD, PrivatePostgres, private_postgres
from tests.reliability.database_load import (
    DueWorker,
    Write,
    WriteLoad,
    recorded_events,
    wait_recorded,
)
from tests.waiting import wait_until
from tests.workers import spawn_sleeper, wait_dead

__all__ = ["private_postgres"]  # the fixture, used by name below

NODE = "db-fault-node"
OUTAGE_SECONDS = 12.0
# A safety bound, not a speed target, below the service's own overdue line (the stack
# budget, 2 s, plus 1 s): the issue measured 40-62 ms on a quiet machine, a few hundred
# with the stack capture on this shared, loaded one.
KILL_LATE_BOUND = 2.0


@pytest.fixture
def service(tmp_path: Path, private_postgres: PrivatePostgres) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp_path, "--node-name", NODE, "--node-timeout", "6")
    running.db_url = private_postgres.url
    running.start()
    yield running
    running.stop()


def get(service: ServiceProcess, path: str, **params: Any) -> httpx.Response:
    return httpx.get(service.url + path, params=params, timeout=10)


def health(service: ServiceProcess) -> dict[str, Any]:
    body: dict[str, Any] = get(service, "/healthz").json()
    return body


def node_up(service: ServiceProcess) -> bool:
    response = get(service, "/nodes")
    return response.status_code == 200 and any(
        node["name"] == NODE and node["status"] == "up" for node in response.json()["items"]
    )


def seconds_until(check: Any, timeout: float) -> float:
    started = time.monotonic()
    assert wait_until(check, timeout=timeout), f"not within {timeout} s"
    return time.monotonic() - started


def check_reads_while_away(service: ServiceProcess, active_ids: set[int]) -> None:
    """Active timers from the engine; history 503 JSON naming the database; pages up."""
    active = get(service, "/timers", state="active", limit=1000)
    assert active.status_code == 200
    assert active_ids <= {timer["id"] for timer in active.json()["items"]}
    some_id = min(active_ids)
    for path in ("/events", f"/timers/{some_id}", "/timers", "/nodes", "/jobs", "/losses"):
        response = get(service, path)
        assert response.status_code == 503, (path, response.text)
        assert "database" in response.json()["detail"], path
    page = get(service, "/")
    assert page.status_code == 200 and "History is unavailable" in page.text
    state = get(service, "/dashboard/state").json()
    assert state["history_unavailable"] and {t["id"] for t in state["active"]} >= active_ids


def check_kills(due: list[DueWorker], events: list[dict[str, Any]]) -> list[float]:
    """Every due worker died of SIGKILL, and its kill was recorded once, on time."""
    lateness = []
    for worker in due:
        assert wait_dead(worker.process) == -9
        kills = [e for e in events if e["kind"] == "killed" and e["pid"] == worker.process.pid]
        assert len(kills) == 1, kills
        lateness.append(float(kills[0]["detail"]["latency"]))
    assert max(lateness) < KILL_LATE_BOUND, lateness
    return lateness


def check_nothing_lost_or_doubled(writes: list[Write], events: list[dict[str, Any]]) -> None:
    """Each answered arm has one ``acquired`` event and each answered release one
    ``released``, however the write was answered (201, 200 or 202)."""
    counts = Counter((e["timer_id"], e["kind"]) for e in events)
    doubled = {key: n for key, n in counts.items() if n > 1 and key[1] != "extended"}
    assert not doubled, doubled
    armed = {w.scope: w.timer_id for w in writes if w.op == "arm"}
    for write in writes:
        kind = "acquired" if write.op == "arm" else "released"
        assert counts[(armed[write.scope], kind)] == 1, write


def test_a_stopped_database_under_load(
    service: ServiceProcess,
    private_postgres: PrivatePostgres,
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    load_worker, bystander = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([load_worker, bystander])
    armed = httpx.post(
        service.url + "/timers",
        json={"pid": bystander.pid, "scope_id": "bystander", "expires_in": 600},
    )
    assert armed.status_code == 201
    # Due during the outage, armed (and recorded: 201) before it.
    due = [DueWorker.arm(service.url, expires_in) for expires_in in (5.0, 6.0, 7.0)]
    sleepers.extend(worker.process for worker in due)
    assert {worker.status for worker in due} == {201}
    log_before = len(service.log().splitlines())

    private_postgres.stop()
    stopped_at = time.monotonic()
    # Idle: no request, no event until the first deadline; the probe alone notices.
    degraded_after = seconds_until(lambda: health(service)["status"] == "degraded", 10)
    report = health(service)
    assert report["database"]["up"] is False
    assert any("database" in problem for problem in report["problems"])

    load = WriteLoad(service.url, load_worker.pid).start()
    during = DueWorker.arm(service.url, 3.0)  # armed during the outage: 202, killed anyway
    sleepers.append(during.process)
    due.append(during)
    assert during.status == 202
    check_reads_while_away(service, {armed.json()["id"]})
    assert wait_until(lambda: all(w.process.poll() is not None for w in due), timeout=15)
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))

    private_postgres.start()
    back_after = seconds_until(lambda: health(service)["status"] == "ok" and node_up(service), 5)
    time.sleep(1.0)  # a second of writes with the database back: 201 and 200 again
    summary = checked_after_fault(service, private_postgres, load, due)
    statuses = Counter(write.status for write in load.writes)
    assert statuses[202] > 0 and statuses[201] > 0
    assert health(service)["lost_events_unacknowledged"] == 0

    log = service.log()
    outage_lines = log.splitlines()[log_before:]
    assert PASSWORD not in log
    assert "Traceback" not in log and " 500 " not in log
    assert sum("the database is unavailable (" in line for line in outage_lines) == 1
    assert sum("the database answers again" in line for line in outage_lines) == 1
    # No flood: a handful of lines for the whole outage, however many requests met it.
    assert len(outage_lines) < 40, outage_lines
    print(
        f"stopped {OUTAGE_SECONDS:.0f} s: degraded after {degraded_after:.1f} s idle, ok and "
        f"node up {back_after:.1f} s after the return; {summary}; {len(outage_lines)} log lines"
    )


def load_and_due_workers(
    service: ServiceProcess,
    sleepers: list[subprocess.Popen[bytes]],
    deadlines: tuple[float, ...],
) -> tuple[WriteLoad, list[DueWorker]]:
    """Workers due in ``deadlines`` seconds (armed now), and HTTP writes running."""
    load_worker = spawn_sleeper()
    sleepers.append(load_worker)
    due = [DueWorker.arm(service.url, expires_in) for expires_in in deadlines]
    sleepers.extend(worker.process for worker in due)
    return WriteLoad(service.url, load_worker.pid).start(), due


def checked_after_fault(
    service: ServiceProcess, server: PrivatePostgres, load: WriteLoad, due: list[DueWorker]
) -> str:
    """Once the fault is over: every write answered within a second as applied, every
    due worker killed once and on time, nothing lost or doubled, no traceback. Returns
    what was measured, in a line."""
    writes = load.stop()
    wait_recorded(service.url)
    slowest = check_writes(writes)
    events = recorded_events(server.url)
    lateness = check_kills(due, events)
    check_nothing_lost_or_doubled(writes, events)
    assert "Traceback" not in service.log()
    return (
        f"{len(writes)} writes ({dict(Counter(w.status for w in writes))}), slowest "
        f"{slowest * 1000:.0f} ms; kill lateness "
        f"{', '.join(f'{late * 1000:.0f}' for late in lateness)} ms"
    )


def check_writes(writes: list[Write]) -> float:
    """Every write was answered, as applied, within a second: the slowest, in seconds."""
    statuses = Counter(write.status for write in writes)
    assert set(statuses) <= {200, 201, 202}, statuses
    slowest = max(write.seconds for write in writes)
    assert slowest < 1.0, slowest
    return slowest


def test_a_hanging_database_holds_the_kill_path(
    service: ServiceProcess,
    private_postgres: PrivatePostgres,
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """SIGSTOP on the server and every backend: it refuses nothing and answers nothing.
    Kills, writes (202 within a second) and /healthz do not wait for it."""
    load, due = load_and_due_workers(service, sleepers, (2.0, 3.0))
    hung = private_postgres.hang()
    try:
        degraded_after = seconds_until(lambda: health(service)["status"] == "degraded", 10)
        assert wait_until(lambda: all(w.process.poll() is not None for w in due), timeout=10)
        assert get(service, "/timers", state="active").status_code == 200
        time.sleep(max(0.0, 6.0 - degraded_after))
    finally:
        private_postgres.resume(hung)
    back_after = seconds_until(lambda: health(service)["status"] == "ok" and node_up(service), 5)
    summary = checked_after_fault(service, private_postgres, load, due)
    print(
        f"hung 6 s: degraded after {degraded_after:.1f} s, ok {back_after:.1f} s after; {summary}"
    )


def test_connections_killed_under_load(
    service: ServiceProcess,
    private_postgres: PrivatePostgres,
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """``pg_terminate_backend`` on every connection of the service, five times a second
    for three seconds, under load: the same guarantees."""
    load, due = load_and_due_workers(service, sleepers, (1.0, 2.0))
    cut = 0
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        cut += private_postgres.terminate_connections()
        time.sleep(0.2)
    assert cut > 0
    print(f"{cut} connections cut: {checked_after_fault(service, private_postgres, load, due)}")


def test_a_database_unreachable_at_start_is_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql+psycopg://postgres:{PASSWORD}@/postgres?host={tmp_path / 'no-server'}"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0", "--db-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    refusal = [line for line in result.stderr.splitlines() if "cannot reach" in line]
    assert len(refusal) == 1 and "pg_isready" in refusal[0] and "--db-wait" in refusal[0]
    assert "postgres:***@" in refusal[0]
    assert PASSWORD not in result.stderr + result.stdout
    # As --token: a password on the command line is visible in ps; said, with the way out.
    assert "--db-url's password is visible" in result.stderr
    assert "TIMER_SERVICE_DB_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_wait_starts_once_the_database_comes_up(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    private_postgres.stop()
    service = ServiceProcess(tmp_path, "--db-wait", "60", "--node-name", NODE)
    service.db_url = private_postgres.url
    waited = threading.Event()

    def start_once_it_waits() -> None:
        # The database comes up only after the service said it waits for it (whatever
        # happens, it comes up: the module's other tests use it).
        if wait_until(lambda: "waiting up to 60 s for the database" in service.log(), 60):
            waited.set()
        private_postgres.start()

    later = threading.Thread(target=start_once_it_waits)
    (tmp_path / "service.log").touch()
    later.start()
    try:
        service.start()  # waits until healthy, and fails if the process exits
        assert waited.is_set()
        assert PASSWORD not in service.log()
    finally:
        later.join()
        service.stop()
