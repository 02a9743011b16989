"""Sustained load over HTTP and the FIFO together, and a SIGKILL of the service in
the middle of it. Short in CI; the full-length run is

    TIMER_SERVICE_LOAD_SECONDS=60 python -m pytest tests/reliability -m slow
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.app.service_process import ServiceProcess
from tests.reliability.load import (
    all_events,
    all_pages,
    finish_fifo_writers,
    start_fifo_writers,
    start_http_clients,
)
from tests.workers import spawn_sleeper, wait_dead

LOAD_SECONDS = float(os.environ.get("TIMER_SERVICE_LOAD_SECONDS", "4"))
HTTP_CLIENTS = 16
FIFO_WRITERS = 8

# The suite's 120 s per-test limit grows with the load's length.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120 + 3 * LOAD_SECONDS)]


def arm_victims(
    url: str, victims: list[subprocess.Popen[bytes]], first_at: float, spread: float
) -> list[int]:
    """Arm one timer per victim, the first due at unix time ``first_at``."""
    ids = []
    for index, victim in enumerate(victims):
        deadline = first_at + index * spread
        body = {"pid": victim.pid, "scope_id": "hung", "expiration_time": deadline}
        response = httpx.post(url + "/timers", json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def test_sustained_http_and_fifo_load_loses_nothing_and_kills_exactly_the_expired(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    fifo = str(tmp_path / "timers.fifo")
    service = ServiceProcess(tmp_path, "--fifo", fifo, "--log-level", "warning").start()
    try:
        spared = spawn_sleeper()
        victims = [spawn_sleeper() for _ in range(6)]
        sleepers.extend([spared, *victims])
        victim_ids = arm_victims(
            service.url, victims, time.time() + 0.5, LOAD_SECONDS * 0.8 / len(victims)
        )
        writers = start_fifo_writers(fifo, FIFO_WRITERS, LOAD_SECONDS)
        threads, tallies = start_http_clients(service.url, spared.pid, HTTP_CLIENTS, LOAD_SECONDS)
        for thread in threads:
            thread.join(LOAD_SECONDS + 60)
        fifo_counts = finish_fifo_writers(writers, fifo)
        events = all_events(service.url)

        statuses = sum((t.statuses for t in tallies), collections.Counter())
        assert not [code for code in statuses if code >= 500], statuses
        assert all(t.transport_errors == 0 for t in tallies)
        by_key = collections.Counter((e["pid"], e["scope_id"], e["kind"]) for e in events)
        for index, tally in enumerate(tallies):
            scope = f"http-{index}"
            assert tally.created or tally.accepted, f"client {index} was never served"
            # Every applied request is recorded, whether it was answered after its
            # commit (201/200) or before it (202).
            applied = len(tally.created) + len(tally.accepted)
            assert by_key[(spared.pid, scope, "acquired")] == applied
            assert by_key[(spared.pid, scope, "released")] == tally.released + (
                tally.accepted_releases
            )
        for pid, (acquired, released) in fifo_counts.items():
            assert acquired > 0
            assert by_key[(pid, "fifo-step", "acquired")] == acquired
            assert by_key[(pid, "fifo-step", "released")] == released
        for victim in victims:
            assert wait_dead(victim, 10) == -signal.SIGKILL
        for victim_id in victim_ids:
            assert httpx.get(f"{service.url}/timers/{victim_id}").json()["state"] == "killed"
        assert spared.poll() is None, "a worker whose timers were all released was killed"
        answered = sum(statuses.values())
        fifo_requests = sum(a + r for a, r in fifo_counts.values())
        print(  # shown with -s: what the load amounted to
            f"\nload {LOAD_SECONDS:.0f}s: {answered} HTTP requests answered, {fifo_requests} "
            f"FIFO requests applied, {len(events)} events recorded, {len(victims)} kills"
        )
    finally:
        service.stop()


def test_sigkill_mid_load_loses_no_acknowledged_timer_and_rearms_the_rest(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    service = ServiceProcess(tmp_path, "--log-level", "warning").start()
    try:
        spared = spawn_sleeper()
        early = [spawn_sleeper() for _ in range(3)]  # deadlines pass while it is down
        late = [spawn_sleeper() for _ in range(3)]  # deadlines come after the restart
        sleepers.extend([spared, *early, *late])
        crash_at = time.time() + LOAD_SECONDS / 2
        early_ids = arm_victims(service.url, early, crash_at + 0.5, 0.1)
        late_ids = arm_victims(service.url, late, crash_at + 3.0, 0.3)
        threads, tallies = start_http_clients(service.url, spared.pid, 8, LOAD_SECONDS + 2)
        time.sleep(max(0.0, crash_at - time.time()))
        service.crash()
        time.sleep(1.5)
        for victim in early:
            assert victim.poll() is None  # nobody killed them while the service was down
        service.start()
        for thread in threads:
            thread.join(LOAD_SECONDS + 60)
        for victim in [*early, *late]:
            assert wait_dead(victim, 15) == -signal.SIGKILL
        events = all_events(service.url)

        acknowledged = [timer_id for t in tallies for timer_id in t.created]
        assert any(t.transport_errors for t in tallies), "the crash was not felt"
        statuses = sum((t.statuses for t in tallies), collections.Counter())
        assert not [code for code in statuses if code >= 500], statuses
        stored = {timer["id"]: timer["state"] for timer in all_pages(service.url, "/timers")}
        missing = set(acknowledged) - set(stored)
        assert not missing, f"acknowledged with 201 but lost: {sorted(missing)[:10]}"
        assert {stored[timer_id] for timer_id in [*early_ids, *late_ids]} == {"killed"}
        per_timer = collections.Counter((e["timer_id"], e["kind"]) for e in events)
        duplicated = {key: n for key, n in per_timer.items() if n > 1 and key[0] is not None}
        assert duplicated == {}, f"duplicated events: {duplicated}"
        assert spared.poll() is None
        print(  # shown with -s
            f"\ncrash at {LOAD_SECONDS / 2:.0f}s of {LOAD_SECONDS:.0f}s: {len(acknowledged)} "
            f"acquisitions acknowledged, all found after restart; {len(events)} events, "
            f"none duplicated; {len(early) + len(late)} re-armed timers fired"
        )
    finally:
        service.stop()
