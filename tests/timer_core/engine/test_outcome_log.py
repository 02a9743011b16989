"""One log line per expiry outcome and per refusal, from the library's own loggers,
with the facts an operator needs; hostile scopes cannot forge lines."""

from __future__ import annotations

import logging
import signal

import pytest

from tests.timer_core.world import World
from timer_core import EventKind, ProcessIdentity, RefusedError
from timer_core.engine import CapturedStack
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.event_details import Kill
from timer_core.engine.kill_outcomes import outcome_line
from timer_core.engine.process import SignalOutcome
from timer_core.engine.timers import LiveTimer


def records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == name]


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="timer_core")
    return caplog


def test_a_kill_is_one_info_line_with_pid_scope_signal_and_lateness(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    view, _ = world.reaper.acquire(ArmRequest(100, "train-step", world.at(5)))
    world.advance(5.25)
    [record] = records(caplog, "timer_core.expiry")
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"timer {view.id} killed: pid=100 scope='train-step' signal=9 (SIGKILL) "
        "source=api late_ms=250.0 stack=none"
    )


def test_a_failed_kill_is_a_warning_with_its_reason(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.signaller.outcomes[100] = SignalOutcome(False, "failed", "permission denied (EPERM)")
    world.reaper.acquire(ArmRequest(100, "step", world.at(1), signal.SIGTERM))
    world.advance(1)
    [record] = records(caplog, "timer_core.expiry")
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "kill failed: pid=100 scope='step' signal=15 (SIGTERM)" in message
    assert "late_ms=0.0" in message and message.endswith("reason='permission denied (EPERM)'")


def test_observe_only_and_gone_workers_are_logged_at_info(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.reaper.acquire(ArmRequest(100, "watched", world.at(1), 0))
    world.signaller.outcomes[101] = SignalOutcome(False, "gone", "no such process")
    world.reaper.acquire(ArmRequest(101, "gone", world.at(1)))
    world.advance(1)
    messages = {r.getMessage(): r.levelno for r in records(caplog, "timer_core.expiry")}
    assert len(messages) == 2 and set(messages.values()) == {logging.INFO}
    assert any("expired: pid=100" in m and "reason='observe only'" in m for m in messages)
    assert any("worker already gone: pid=101" in m for m in messages)


def test_an_escalation_that_kills_nothing_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    world = World(escalate_after=2.0)
    world.reaper.acquire(ArmRequest(100, "step", world.at(1), signal.SIGTERM))
    world.advance(1)
    world.signaller.outcomes[100] = SignalOutcome(False, "failed", "permission denied (EPERM)")
    world.advance(2)
    [killed, escalated] = records(caplog, "timer_core.expiry")
    assert killed.levelno == logging.INFO
    assert escalated.levelno == logging.WARNING
    assert "escalated to SIGKILL: pid=100" in escalated.getMessage()
    assert "late_ms=2000.0" in escalated.getMessage()


def test_a_refusal_is_one_warning_from_the_reaper(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(RefusedError):
        world.reaper.acquire(ArmRequest(1, "step", world.at(5)), Origin("fifo"))
    [record] = records(caplog, "timer_core.reaper")
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "refused a timer request from fifo: pid=1 scope='step' signal=9 (SIGKILL) "
        "reason='pid 1 names init or every process'"
    )
    assert records(caplog, "timer_core.expiry") == []


def test_a_scope_with_line_breaks_stays_on_one_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # "\n" and "\r" are refused at the door (control characters: request_text), and
    # their refusal is logged on one line. The Unicode line and paragraph separators are
    # not control characters, so they are armed: the kill's line and a refusal's must
    # stay one line too.
    forged = "step\u20282030-01-01 00:00:00,000 INFO timer_core.expiry: timer 9 killed\u2029"
    world.reaper.acquire(ArmRequest(100, forged, world.at(1)))
    world.advance(1)
    with pytest.raises(RefusedError):
        world.reaper.acquire(ArmRequest(1, forged, world.at(5)))
    with pytest.raises(RefusedError, match="U\\+000A"):
        world.reaper.acquire(ArmRequest(100, "step\n2030-01-01 INFO timer 9 killed\r", world.at(5)))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("timer_core")]
    assert len(lines) == 3
    for line in lines:
        assert line.splitlines() == [line]
    assert all("scope='step\\u20282030-01-01 00:00:00,000 INFO" in line for line in lines[:2])
    assert "scope='step\\n2030-01-01 INFO timer 9 killed\\r'" in lines[2]


def test_the_line_names_the_stack_method_and_its_seconds() -> None:
    timer = LiveTimer(7, ProcessIdentity(1234, 1.0), "s", 9, "http", 0.0, 10.0, 100.0)
    stack = CapturedStack("py-spy", "Thread 1234 ...", 0.0432)
    kill = Kill(0.0521, children=(1235,), stack=stack)
    line = outcome_line(EventKind.KILLED, timer, 0.0521, kill)
    assert line == (
        "timer 7 killed: pid=1234 scope='s' signal=9 (SIGKILL) source=http "
        "late_ms=52.1 stack=py-spy (0.043s) children=[1235]"
    )


def test_nothing_is_logged_for_acquire_heartbeat_and_release(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.reaper.acquire(ArmRequest(100, "step", world.at(5)))
    world.reaper.acquire(ArmRequest(100, "step", world.at(6)))
    world.reaper.release(100, "step")
    world.advance(10)
    assert records(caplog, "timer_core.expiry") == records(caplog, "timer_core.reaper") == []
