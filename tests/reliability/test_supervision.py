"""Watching the watchdog: a dead reaper thread is restarted; a stalled one fails
/healthz and makes the service exit non-zero for its supervisor."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.worker_node import STALL_EXIT_CODE
from tests.conftest import in_process, service_of, worker_node_of
from tests.waiting import wait_until
from tests.workers import wait_dead
from timer_core.engine.arm_request import ArmRequest


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return replace(settings, reaper_stall_seconds=1.0)


@pytest.fixture
def client(quick: Settings) -> Iterator[TestClient]:
    with in_process(create_app(quick)) as test_client:
        yield test_client


# The thread's death is the scenario, so its unhandled exception is expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_reaper_thread_is_restarted_and_still_kills(
    client: TestClient, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, node = service_of(client), worker_node_of(client)
    reaper = node.reaper
    original_step = reaper.step
    calls = {"n": 0}

    def crash_once() -> float | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the reaper loop")
        return original_step()

    # The loop holds the bound step it was built with: replace that one.
    monkeypatch.setattr(reaper._loop, "_step", crash_once)
    reaper.acquire(ArmRequest(sleeper.pid, "s", time.time() + 0.2))  # wakes the loop into the crash
    assert wait_until(lambda: node.reaper_restarts == 1)
    assert wait_dead(sleeper) == -9
    assert client.get("/healthz").status_code == 200
    assert service.metrics.registry.get_sample_value("timer_reaper_restarts_total") == 1


def test_a_stalled_reaper_fails_healthz_and_triggers_the_exit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, node = service_of(client), worker_node_of(client)
    stalled = threading.Event()
    node.on_stall = stalled.set
    reaper = node.reaper
    release = threading.Event()

    def hang() -> float | None:
        release.wait(30)
        return None

    monkeypatch.setattr(reaper._loop, "_step", hang)  # the step the loop calls
    reaper.acquire(ArmRequest(service.pid, "wake", time.time(), 0))  # observe-only: wakes the loop
    try:
        assert stalled.wait(10), "the supervisor never noticed the stall"
        response = client.get("/healthz")
        assert response.status_code == 503
        assert "stalled" in " ".join(response.json()["problems"])
        since = service.metrics.registry.get_sample_value("timer_reaper_seconds_since_loop")
        assert since is not None and since > 0
    finally:
        release.set()


def test_the_stall_exit_is_non_zero_so_systemd_restarts_the_service() -> None:
    code = "from app.worker_node import _exit_for_supervisor; _exit_for_supervisor()"
    result = subprocess.run([sys.executable, "-c", code], timeout=30)
    assert result.returncode == STALL_EXIT_CODE != 0
