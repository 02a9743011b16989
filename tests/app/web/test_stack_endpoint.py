"""The real service captures a stuck worker's stack before the kill and serves it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.app.service_process import ServiceProcess, wait_for_state
from tests.workers import FUNCTION, assert_sigkilled, needs_py_spy, spawn_stuck, wait_dead

BUDGET = 2.0


def kill_stuck_worker(service: ServiceProcess, dump: bool) -> tuple[dict[str, Any], httpx.Response]:
    worker = spawn_stuck("http", service.url, "dump" if dump else "no-dump", "0.5")
    assert_sigkilled(worker, 30)
    timer = wait_for_state(service.url, worker.pid, "killed")
    return timer, httpx.get(f"{service.url}/timers/{timer['id']}/stack")


def killed_latency(service: ServiceProcess, timer_id: int) -> float:
    events = httpx.get(service.url + "/events", params={"timer_id": timer_id}).json()["items"]
    [killed] = [event for event in events if event["kind"] == "killed"]
    return float(killed["detail"]["latency"])


@needs_py_spy
def test_the_stack_names_the_function_the_worker_hung_in(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path, "--stack-budget", str(BUDGET)).start()
    try:
        timer, response = kill_stuck_worker(service, dump=False)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["x-stack-method"].startswith("py-spy")
        assert FUNCTION in response.text
        assert killed_latency(service, timer["id"]) <= BUDGET
    finally:
        service.stop()


def test_without_py_spy_the_fallback_is_used_and_said(tmp_path: Path) -> None:
    env = {"TIMER_SERVICE_STACK_PY_SPY": "false"}
    service = ServiceProcess(tmp_path, env=env).start()
    try:
        _, plain = kill_stuck_worker(service, dump=False)
        assert plain.headers["x-stack-method"] == "proc"
        assert "State:" in plain.text
        # A worker that opted in with dump_stack_on gives its Python stack anyway.
        _, dumped = kill_stuck_worker(service, dump=True)
        assert dumped.headers["x-stack-method"] == "faulthandler"
        assert FUNCTION in dumped.text
    finally:
        service.stop()


def test_no_stack_for_a_released_timer_or_with_capture_off(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    service = ServiceProcess(tmp_path, "--no-capture-stacks").start()
    try:
        body = {"pid": sleeper.pid, "scope_id": "s", "expires_in": 0.3}
        timer_id = httpx.post(service.url + "/timers", json=body).json()["id"]
        assert wait_dead(sleeper) == -signal.SIGKILL
        wait_for_state(service.url, sleeper.pid, "killed")
        response = httpx.get(f"{service.url}/timers/{timer_id}/stack")
        assert response.status_code == 404 and "no stack" in response.json()["detail"]
    finally:
        service.stop()


@pytest.mark.parametrize("timer_id", ["0", "99999", "abc"])
def test_stack_of_an_unknown_timer(client: TestClient, timer_id: str) -> None:
    response = client.get(f"/timers/{timer_id}/stack")
    assert response.status_code in (404, 422) and "detail" in response.json()
