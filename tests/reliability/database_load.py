"""What the database-fault tests drive at the real service and check afterwards: HTTP
writes timed one by one, workers due during the fault, and the recorded events."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tests.workers import spawn_sleeper

__all__ = ["DueWorker", "Write", "WriteLoad", "recorded_events", "wait_recorded"]


@dataclass
class Write:
    op: str  # "arm" or "release"
    scope: str
    status: int
    seconds: float
    sent_at: float
    timer_id: int | None


@dataclass
class WriteLoad:
    """Arm-and-release pairs over HTTP on a thread, each write timed, until stopped."""

    url: str
    pid: int
    pause: float = 0.02
    writes: list[Write] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> WriteLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Write]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)
        return self.writes

    def _send(self, client: httpx.Client, op: str, scope: str) -> None:
        path, body = (
            ("/timers", {"pid": self.pid, "scope_id": scope, "expires_in": 600})
            if op == "arm"
            else ("/timers/release", {"pid": self.pid, "scope_id": scope})
        )
        sent_at = time.time()
        started = time.monotonic()
        try:
            response = client.post(path, json=body)
        except httpx.HTTPError:  # status 0: the service did not answer at all
            self.writes.append(Write(op, scope, 0, time.monotonic() - started, sent_at, None))
            return
        seconds = time.monotonic() - started
        payload = response.json()
        timer = payload.get("timer", payload) if isinstance(payload, dict) else {}
        self.writes.append(
            Write(op, scope, response.status_code, seconds, sent_at, timer.get("id"))
        )

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            number = 0
            while not self._stop.is_set():
                number += 1
                scope = f"load-{number}"
                self._send(client, "arm", scope)
                self._send(client, "release", scope)
                time.sleep(self.pause)


@dataclass
class DueWorker:
    """A sleeping worker and the deadline it was armed with."""

    process: subprocess.Popen[bytes]
    deadline: float
    status: int

    @classmethod
    def arm(cls, url: str, expires_in: float) -> DueWorker:
        process = spawn_sleeper()
        deadline = time.time() + expires_in
        response = httpx.post(
            url + "/timers",
            json={"pid": process.pid, "scope_id": "due", "expiration_time": deadline},
            timeout=30,
        )
        assert response.status_code in (201, 202), response.text
        return cls(process, deadline, response.status_code)


def recorded_events(db_url: str) -> list[dict[str, Any]]:
    """Every event the service recorded, in order."""
    with psycopg.connect(db_url.replace("+psycopg", "")) as connection:
        rows = connection.execute(
            "SELECT events.id, timer_id, kind, detail, timers.pid, timers.scope_id"
            " FROM events LEFT JOIN timers ON timers.id = events.timer_id ORDER BY events.id"
        ).fetchall()
    return [
        {
            "id": row[0],
            "timer_id": row[1],
            "kind": row[2],
            "detail": row[3] if isinstance(row[3], dict) else json.loads(row[3] or "{}"),
            "pid": row[4],
            "scope": row[5],
        }
        for row in rows
    ]


def wait_recorded(url: str, timeout: float = 30.0) -> None:
    """Until the service's recorder has written everything it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recorder = httpx.get(url + "/healthz", timeout=5).json()["recorder"]
        if recorder["backlog"] == 0 and recorder["behind"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the recorder did not catch up")
