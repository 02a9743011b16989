"""``timer-service events --follow`` against the real service: it shows the newest
events, then each new one once, in order, as the REST log has them (``--json``: one
REST event a line), and ends on Ctrl-C (SIGINT) with exit 0 and no traceback.

And ``EventTail``, the bookkeeping that keeps it from repeating or skipping events a
fleet's nodes commit out of id order, on a hand-moved clock."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.cli.client.follow import EventTail
from tests.app.cli.client_cli import cli_popen
from tests.app.service_process import ServiceProcess
from tests.workers import spawn_sleeper

# It polls twice a second; this is room for a loaded machine, not an expected time.
LINE_TIMEOUT = 60.0


class Lines:
    """A running client's stdout, line by line, read on a thread of its own."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self) -> str:
        try:
            line = self._lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no line within {LINE_TIMEOUT} s") from None
        assert line is not None, "the client ended"
        return line

    def interrupt(self) -> tuple[int, list[str], str]:
        """Ctrl-C: its exit status, the lines it wrote after those read, and stderr."""
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(LINE_TIMEOUT)
        self._reader.join(LINE_TIMEOUT)
        rest = []
        while (line := self._lines.get_nowait()) is not None:
            rest.append(line)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdout.close()
        with self.process.stderr:
            return status, rest, self.process.stderr.read()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    running = ServiceProcess(tmp_path_factory.mktemp("follow")).start()
    yield running
    running.stop()


def arm(service: ServiceProcess, pid: int, scope: str) -> dict[str, Any]:
    answer = httpx.post(
        service.url + "/timers",
        json={"pid": pid, "scope_id": scope, "expires_in": 600, "signal": 0},
    )
    assert answer.status_code == 201, answer.text
    timer: dict[str, Any] = answer.json()
    return timer


def release(service: ServiceProcess, pid: int, scope: str) -> None:
    answer = httpx.post(service.url + "/timers/release", json={"pid": pid, "scope_id": scope})
    assert answer.status_code == 200, answer.text


def events_after(service: ServiceProcess, after: int) -> list[dict[str, Any]]:
    answer = httpx.get(service.url + "/events", params={"after": after, "limit": 1000})
    assert answer.status_code == 200 and answer.json()["next"] is None, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_follow_shows_each_new_event_once_and_ends_on_ctrl_c(
    service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    sleepers.append(spawn_sleeper())
    pid = sleepers[-1].pid
    first = arm(service, pid, "before")
    [backlog] = httpx.get(service.url + "/events").json()["items"]
    as_json = Lines(cli_popen("events", "--follow", "--json", "--url", service.url))
    as_table = Lines(cli_popen("events", "-f", "--url", service.url))
    # The newest event first (the log's backlog), as the REST log has it.
    assert json.loads(as_json.next()) == backlog
    assert "acquired" in (shown := as_table.next()) and str(first["id"]) in shown

    release(service, pid, "before")
    second = arm(service, pid, "during")
    release(service, pid, "during")
    new = events_after(service, backlog["id"])
    assert [(e["kind"], e["timer_id"]) for e in new] == [
        ("released", first["id"]),
        ("acquired", second["id"]),
        ("released", second["id"]),
    ]
    assert [json.loads(as_json.next()) for _ in new] == new
    tabled = [as_table.next() for _ in new]
    for event, line in zip(new, tabled, strict=True):
        assert event["kind"] in line and f"timer {event['timer_id']} " in line
        assert f"pid {pid} " in line

    # One more after them: the polls since have shown none of them again.
    last = arm(service, pid, "after")
    [after] = events_after(service, new[-1]["id"])
    assert json.loads(as_json.next()) == after
    assert str(last["id"]) in as_table.next()

    for follower in (as_json, as_table):
        status, rest, errors = follower.interrupt()
        assert status == 0, errors
        assert rest == [] and "Traceback" not in errors and "KeyboardInterrupt" not in errors


def test_follow_keeps_the_filters(
    service: ServiceProcess, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    sleepers.append(spawn_sleeper())
    pid = sleepers[-1].pid
    arm(service, pid, "earlier")
    release(service, pid, "earlier")
    follower = Lines(
        cli_popen(
            "events",
            "--follow",
            "--json",
            "--kind",
            "released",
            "--limit",
            "1",
            "--url",
            service.url,
        )
    )
    # The newest release is its backlog: once shown, the client is following.
    assert json.loads(follower.next())["scope_id"] == "earlier"
    timer = arm(service, pid, "filtered")
    release(service, pid, "filtered")
    shown = json.loads(follower.next())
    assert (shown["kind"], shown["timer_id"]) == ("released", timer["id"])
    status, rest, errors = follower.interrupt()
    assert status == 0 and rest == [], errors


def event(event_id: int) -> dict[str, Any]:
    return {"id": event_id}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_event_committed_after_a_newer_one_is_shown_once() -> None:
    clock = Clock()
    tail = EventTail(10, settle_seconds=5, clock=clock)
    assert [e["id"] for e in tail.take([event(11), event(13)])] == [11, 13]
    tail.settle()
    assert tail.after == 11  # 12 is missing below 13: asked for again
    clock.now += 1
    # Next poll: 12 committed late, 13 again, 14 new.
    assert [e["id"] for e in tail.take([event(12), event(13), event(14)])] == [12, 14]
    tail.settle()
    assert (tail.after, tail.pending) == (14, 0)


def test_an_id_never_used_is_given_up_after_the_settle_time() -> None:
    clock = Clock()
    tail = EventTail(0, settle_seconds=5, clock=clock)
    tail.take([event(1), event(3)])
    tail.settle()
    assert tail.after == 1
    clock.now += 4.9
    tail.settle()
    assert tail.after == 1
    clock.now += 0.2
    tail.settle()
    assert (tail.after, tail.pending) == (3, 0)
    assert tail.take([event(2), event(3)]) == []  # too late, and already shown


def test_memory_is_bounded_by_max_pending() -> None:
    clock = Clock()
    tail = EventTail(0, settle_seconds=60, max_pending=100, clock=clock)
    # Every other id: never an unbroken run, and nothing old enough to settle.
    shown = tail.take(event(i) for i in range(2, 1002, 2))
    assert len(shown) == 500
    tail.settle()
    assert tail.pending <= 100
    assert tail.take(event(i) for i in range(2, 1002, 2)) == []  # none shown twice
