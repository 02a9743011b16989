"""Attacks on the kill path, against the real ``timer-service`` process: more planted
FIFOs at once than there are capture slots, and 40 workers expiring at the same
instant. Every worker dies of SIGKILL and every timer ends ``killed``: outcomes are
asserted, never timings (bench/attacks.py measures the lateness).

One planted FIFO or link, for a second user's worker, is tests/app/access/test_stack_dirs.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.app.service_process import ServiceProcess
from tests.waiting import wait_until
from tests.workers import assert_sigkilled

PLANTED = 10  # more than the 8 capture slots
SIMULTANEOUS = 40


def spawn(workers: list[subprocess.Popen[bytes]], count: int) -> list[subprocess.Popen[bytes]]:
    """Plain processes of this user (``sleep``), added to ``workers``: a stray SIGUSR2
    would kill them with that signal instead of SIGKILL, so "died of SIGKILL" also says
    none was sent."""
    new = [subprocess.Popen(["sleep", "300"]) for _ in range(count)]
    workers.extend(new)
    return new


def ended_timers(url: str, state: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = httpx.get(
        url + "/timers", params={"state": state, "limit": 200}
    ).json()["items"]
    return items


def killed_events(url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = httpx.get(
        url + "/events", params={"kind": "killed", "limit": 200}
    ).json()["items"]
    return items


def test_more_planted_fifos_than_capture_slots_stop_no_kill(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    root = tmp_path / "stacks"
    env = {"TIMER_SERVICE_STACK_PY_SPY": "false"}  # straight to the dump files
    service = ServiceProcess(tmp_path, "--stack-dir", str(root), env=env).start()
    try:
        planted = spawn(sleepers, PLANTED)
        [victim] = spawn(sleepers, 1)  # asks for no dump: nothing planted for it
        dump = {"dump_signal": int(signal.SIGUSR2)}
        with httpx.Client(base_url=service.url) as http:
            for worker in planted:
                body = {"pid": worker.pid, "scope_id": "hung", "expires_in": 60, **dump}
                assert http.post("/timers", json=body).status_code == 201
            directory = root / str(os.getuid())
            assert wait_until(directory.is_dir)  # made by the service for this uid
            for worker in planted:
                os.mkfifo(directory / f"{worker.pid}.stack")

            deadline = time.time() + 1.0  # every one due at the same instant
            for worker in planted:
                body = {"pid": worker.pid, "scope_id": "hung", "expiration_time": deadline}
                assert http.post("/timers", json={**body, **dump}).status_code == 200
            body = {"pid": victim.pid, "scope_id": "victim", "expiration_time": deadline}
            assert http.post("/timers", json=body).status_code == 201

        for worker in [*planted, victim]:
            assert_sigkilled(worker)
        assert wait_until(lambda: len(ended_timers(service.url, "killed")) == PLANTED + 1)
        assert wait_until(lambda: len(killed_events(service.url)) == PLANTED + 1)
        for event in killed_events(service.url):
            if event["pid"] == victim.pid:
                continue
            stack = event["detail"].get("stack")
            notes = " ".join(stack["notes"]) if stack else event["detail"].get("stack_note", "")
            # Passed over, or (on a slow machine) no time left: never a blocked open.
            assert "not a regular file" in notes or "budget" in notes, event["detail"]
        assert httpx.get(service.url + "/healthz").json()["kills"]["overdue"] == 0
    finally:
        service.stop()


def test_forty_workers_expiring_at_the_same_instant_all_die_of_sigkill(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    service = ServiceProcess(tmp_path).start()
    try:
        batch = spawn(sleepers, SIMULTANEOUS)
        deadline = time.time() + 3.0  # room to arm all 40 first, even on a slow machine
        with httpx.Client(base_url=service.url) as http:
            for worker in batch:
                body = {"pid": worker.pid, "scope_id": "step", "expiration_time": deadline}
                assert http.post("/timers", json=body).status_code == 201
        for worker in batch:
            assert_sigkilled(worker)
        assert wait_until(lambda: len(ended_timers(service.url, "killed")) == SIMULTANEOUS)
        assert wait_until(lambda: len(killed_events(service.url)) == SIMULTANEOUS)
        pids = {worker.pid for worker in batch}
        events = killed_events(service.url)
        assert {event["pid"] for event in events} == pids
        for event in events:
            assert isinstance(event["detail"]["latency"], float)  # recorded for each
        assert ended_timers(service.url, "active") == []
    finally:
        service.stop()
