"""The service knows when it is failing: overdue kills fail /healthz (503) and show in
the metrics; an error on the expiry path is recorded as kill_failed and degrades
/healthz; a loss of events stays reported across a restart until acknowledged.

The overdue kill is driven on a ManualClock with a capture that blocks until the test
releases it: the outcome is asserted, never a timing."""

from __future__ import annotations

import errno
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.access.callers import Caller, current_caller
from app.main import create_app
from app.service import Service
from app.settings import Settings
from app.worker_node import WorkerNode
from tests.app.service_process import ServiceProcess
from tests.conftest import in_process, service_of
from tests.waiting import wait_until
from tests.workers import wait_dead
from timer_core import ManualClock, ProcessIdentity, ProcessSignaller
from timer_core.diagnosis import StackCapturer
from timer_core.engine import CapturedStack
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.process import SignalOutcome


def sample(service: Service, name: str) -> float | None:
    return service.metrics.registry.get_sample_value(name)


@pytest.fixture
def blocked_capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every stack capture blocks until the event is set (set again at teardown)."""
    release, started = threading.Event(), threading.Event()

    def capture(self: StackCapturer, identity: ProcessIdentity, *args: Any, **kw: Any) -> Any:
        started.set()
        release.wait(120)
        return CapturedStack("proc", "released\n", 0.0)

    monkeypatch.setattr(StackCapturer, "capture", capture)
    release.started = started  # type: ignore[attr-defined]
    yield release
    release.set()


def test_an_overdue_kill_fails_healthz_and_is_counted(
    settings: Settings, sleeper: subprocess.Popen[bytes], blocked_capture: threading.Event
) -> None:
    # A kill may wait 60 s for its stack; it is overdue 1 s after that.
    clock = ManualClock(start_monotonic=time.monotonic(), start_time=time.time())
    app = create_app(replace(settings, stack_budget=60.0, overdue_margin=1.0), clock=clock)
    service: Service = app.state.service
    node = service.keeper
    assert isinstance(node, WorkerNode)
    node.on_stall = lambda: None  # the loop stamps its runs on the manual clock
    with in_process(app) as client:
        reaper = node.reaper
        reaper.acquire(ArmRequest(sleeper.pid, "stuck", clock.time() + 1))
        clock.advance(1)  # due: the loop pops it within its one-second idle tick
        assert blocked_capture.started.wait(10)  # type: ignore[attr-defined]
        assert client.get("/healthz").status_code == 200  # waiting within its budget

        clock.advance(61.5)
        response = client.get("/healthz")
        body = response.json()
        assert response.status_code == 503 and body["status"] == "failing"
        assert any("1 due kill not sent within 61s" in p for p in body["problems"]), body
        assert body["kills"]["overdue"] == 1
        assert sample(service, "timer_kills_overdue") == 1
        assert sample(service, "timer_overdue_kills_total") == 1

        blocked_capture.set()  # the capture returns: the kill goes ahead
        assert wait_dead(sleeper) == -9
        assert wait_until(lambda: client.get("/healthz").status_code == 200)
        assert sample(service, "timer_kills_overdue") == 0
        assert sample(service, "timer_overdue_kills_total") == 1


class EmfileSignaller(ProcessSignaller):
    """No descriptor left for the pidfd, or for /proc: ``send`` raises EMFILE."""

    def send(self, identity: ProcessIdentity, signum: int) -> SignalOutcome:
        raise OSError(errno.EMFILE, "Too many open files")


def test_an_error_on_the_expiry_path_is_kill_failed_with_the_reason(
    settings: Settings, sleeper: subprocess.Popen[bytes]
) -> None:
    app = create_app(replace(settings, capture_stacks=False), signaller=EmfileSignaller())
    service: Service = app.state.service
    with in_process(app) as client:
        armed = client.post(
            "/timers", json={"pid": sleeper.pid, "scope_id": "s", "expires_in": 0.2}
        )
        assert armed.status_code == 201
        timer_id = armed.json()["id"]

        def ended() -> bool:
            return bool(client.get(f"/timers/{timer_id}").json()["state"] != "active")

        assert wait_until(ended)
        assert client.get(f"/timers/{timer_id}").json()["state"] == "expired"
        [failed] = client.get("/events", params={"kind": "kill_failed"}).json()["items"]
        assert failed["timer_id"] == timer_id
        assert "Too many open files (EMFILE)" in failed["detail"]["reason"]
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert any("an error on the expiry path" in p for p in health["problems"])
        assert sample(service, "timer_expiry_errors_total") == 1
        registry = service.metrics.registry
        labels = {"outcome": "kill_failed"}
        assert wait_until(lambda: registry.get_sample_value("timer_failures_total", labels) == 1)
    assert sleeper.poll() is None  # not signalled: never by a bare pid


def test_lost_events_stay_reported_across_a_restart_until_acknowledged(
    settings: Settings,
) -> None:
    with in_process(create_app(settings)) as client:
        service = service_of(client)
        assert client.get("/healthz").json()["status"] == "ok"
        service.recorder.dropped += 3  # as a full buffer does
        assert wait_until(lambda: service.losses.unacknowledged() == 3)
        assert wait_until(lambda: service.losses.rows())  # written to the database
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and health["lost_events_unacknowledged"] == 3

    with in_process(create_app(settings)) as client:  # a new process, counters at zero
        service = service_of(client)
        assert service.recorder.dropped == 0
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert any("3 events lost and not acknowledged" in p for p in health["problems"])
        assert sample(service, "timer_lost_events_unacknowledged") == 3
        [loss] = client.get("/losses").json()["items"]
        assert (loss["kind"], loss["count"], loss["acknowledged_at"]) == ("dropped", 3, None)

        acknowledged = client.post("/losses/acknowledge")
        assert acknowledged.status_code == 200 and acknowledged.json() == {"acknowledged": 3}
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/losses").json()["unacknowledged"] == 0

    with in_process(create_app(settings)) as client:
        assert client.get("/healthz").json()["status"] == "ok"


def test_only_an_operator_may_acknowledge_losses(settings: Settings) -> None:
    app = create_app(settings)
    with in_process(app) as client:
        app.dependency_overrides[current_caller] = lambda: Caller(12345, "tcp", "127.0.0.1:1")
        refused = client.post("/losses/acknowledge")
        assert refused.status_code == 403 and "only root" in refused.json()["detail"]


def test_healthz_of_the_real_service_reports_the_kill_path(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path).start()
    try:
        body = httpx.get(service.url + "/healthz").json()
        assert body["kills"]["overdue"] == 0 and body["lost_events_unacknowledged"] == 0
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(httpx.get(service.url + "/metrics").text)
            for sample in family.samples
        }
        assert samples["timer_kills_overdue"] == samples["timer_overdue_kills_total"] == 0
        assert samples["timer_lost_events_unacknowledged"] == 0
    finally:
        service.stop()
