"""``--alertmanager-url`` against a real Alertmanager (contract 11): kills, incidents
and unkillable workers show through its own API with labels job, rank and node and
the summary as an annotation, and resolve when they end."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from app.notify.alertmanager import Alertmanager
from tests.app.notify.alertmanager_process import AlertmanagerProcess
from tests.app.notify.outbox_events import hung_job, recorder_for
from tests.app.service_process import ServiceProcess
from tests.sample_events import changed, event, timer_of
from tests.waiting import wait_until
from tests.workers import assert_sigkilled
from timer_core import EventKind, TimerState
from timer_core.engine.event_details import Unkillable


def by_name(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {alert["labels"]["alertname"]: alert for alert in alerts}


def test_an_incident_fires_and_resolves_when_its_window_closes(
    backend_engine: Engine, alertmanager: AlertmanagerProcess
) -> None:
    recorder, _ = recorder_for(backend_engine)
    hung_job(recorder)
    window = 1.5
    pusher = Alertmanager(alertmanager.url, backend_engine, "https://timers.example", window)
    assert pusher.push()
    (alert,) = alertmanager.alerts()
    assert alert["labels"]["alertname"] == "TimerJobIncident"
    assert alert["labels"]["job"] == "job-1"
    assert alert["labels"]["node"] == "node-a"
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["summary"].startswith("job job-1 hung on node-a")
    assert alert["annotations"]["url"].startswith("https://timers.example/ui/incidents/")
    # Its window closes (no rank joins any more): Alertmanager resolves it.
    assert wait_until(lambda: alertmanager.alerts() == [], timeout=10)


def test_an_unkillable_worker_fires_until_it_exits(
    backend_engine: Engine, alertmanager: AlertmanagerProcess
) -> None:
    recorder, _ = recorder_for(backend_engine)
    now = time.time()
    armed = changed(
        event(1, EventKind.ACQUIRED, 31), at=now, uid=1234, job_id="j", rank=3, node="gpu-1"
    )
    recorder(armed)
    dead = dataclasses.replace(timer_of(armed), state=TimerState.KILLED)
    stuck = Unkillable(12.0, "D", "disk sleep", "fuse_wait")
    recorder(dataclasses.replace(armed, seq=2, kind=EventKind.UNKILLABLE, timer=dead, detail=stuck))
    recorder.flush()
    pusher = Alertmanager(alertmanager.url, backend_engine, "http://x", 60.0)
    assert pusher.push()
    alerts = by_name(alertmanager.alerts())
    stuck_alert = alerts["TimerWorkerUnkillable"]
    assert {key: stuck_alert["labels"][key] for key in ("job", "rank", "node", "timer_id")} == {
        "job": "j",
        "rank": "3",
        "node": "gpu-1",
        "timer_id": "31",
    }
    assert "state D in fuse_wait" in stuck_alert["annotations"]["summary"]
    # The kill that preceded it is not in the outbox (no killed event here): one alert.
    assert set(alerts) == {"TimerWorkerUnkillable"}
    gone = Unkillable(30.0, exited=True)
    recorder(dataclasses.replace(armed, seq=3, kind=EventKind.UNKILLABLE, timer=dead, detail=gone))
    recorder.flush()
    assert pusher.push()
    assert wait_until(lambda: alertmanager.alerts() == [], timeout=10)


def test_an_alertmanager_that_is_down_is_retried(backend_engine: Engine, tmp_path: Path) -> None:
    from tests.app.service_process import free_port

    recorder, _ = recorder_for(backend_engine)
    hung_job(recorder)
    pusher = Alertmanager(f"http://127.0.0.1:{free_port()}", backend_engine, "http://x", 60.0)
    assert not pusher.push()
    assert pusher.last_error is not None and "ConnectError" in pusher.last_error
    assert pusher.due(news=False) is False  # the next round, at its pace
    assert pusher.due(news=True)


def test_the_real_service_posts_a_real_kill(
    tmp_path: Path, alertmanager: AlertmanagerProcess, sleeper: subprocess.Popen[bytes]
) -> None:
    service = ServiceProcess(
        tmp_path,
        "--alertmanager-url",
        alertmanager.url,
        "--node-name",
        "node-7",
        "--incident-window",
        "2",
    ).start()
    try:
        answer = httpx.post(
            service.url + "/timers",
            json={
                "pid": sleeper.pid,
                "scope_id": "step",
                "expires_in": 0.2,
                "rank": 0,
                "job_id": "train",
                "world_size": 1,
            },
        )
        assert answer.status_code == 201, answer.text
        assert_sigkilled(sleeper)
        assert wait_until(lambda: alertmanager.alerts() != [], timeout=10)
        alerts = by_name(alertmanager.alerts())
        assert set(alerts) <= {"TimerWorkerKilled", "TimerJobIncident"}, alerts
        alert = next(iter(alerts.values()))
        assert (alert["labels"]["job"], alert["labels"]["node"]) == ("train", "node-7")
        assert "train" in alert["annotations"]["summary"]
        # The kill is an event: it resolves once the incident window has passed.
        assert wait_until(lambda: alertmanager.alerts() == [], timeout=15)
    finally:
        service.stop()
