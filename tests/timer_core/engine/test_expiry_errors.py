"""An exception anywhere on the expiry path still signals the worker, or records
``kill_failed`` with the reason: a due timer never vanishes silently. Each error is
counted by the engine's KillWatch. On a ManualClock with fakes: no real signals."""

from __future__ import annotations

import errno
import logging
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests.sample_events import timer_of
from tests.timer_core.world import RecordingSignaller, World, kill_of, stack_note
from tests.waiting import wait_until
from timer_core import EventKind, ProcessIdentity, TimerEvent
from timer_core.engine import CapturedStack
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.process import SignalOutcome

EMFILE = OSError(errno.EMFILE, "Too many open files")


class RaisingSignaller(RecordingSignaller):
    """Raises ``error`` from ``send`` (as a /proc read at EMFILE would inside it)."""

    def __init__(self, error: Exception, *, children_too: bool = False) -> None:
        super().__init__()
        self.error = error
        self.children_too = children_too

    def send(self, identity: ProcessIdentity, signum: int) -> SignalOutcome:
        if not self.children_too:
            raise self.error
        return super().send(identity, signum)

    def children(self, identity: ProcessIdentity) -> list[ProcessIdentity]:
        raise self.error


class RaisingCapturer:
    """A ``Capturer`` whose every capture raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.budget = 2.0
        self.error = error

    def capture(
        self, identity: ProcessIdentity, dump_signal: int | None, *, give_up_at: float
    ) -> CapturedStack:
        raise self.error


def expire_one(world: World) -> TimerEvent:
    world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    world.advance(1)
    assert wait_until(lambda: len(world.kinds()) == 2)
    world.reaper.expiry.shutdown()
    event = world.events[-1]
    assert world.reaper.active_count() == 0 and world.reaper.kill_watch.in_flight() == 0
    return event


def test_emfile_from_the_signaller_records_kill_failed_with_the_reason() -> None:
    world = World()
    world.reaper.expiry.killer.signaller = RaisingSignaller(EMFILE)
    event = expire_one(world)
    assert (event.kind, timer_of(event).state) == (EventKind.KILL_FAILED, "expired")
    assert "Too many open files (EMFILE)" in event.reason()
    assert world.reaper.kill_watch.errors_total == 1
    assert "EMFILE" in (world.reaper.kill_watch.recent_error(600) or "")


def test_a_capture_that_raises_does_not_stop_the_kill() -> None:
    world = World(capturer=RaisingCapturer(EMFILE))
    event = expire_one(world)
    assert event.kind == EventKind.KILLED and world.signaller.sent == [(100, signal.SIGKILL)]
    note = stack_note(event)
    assert note is not None and "the capture failed: OSError" in note and "EMFILE" in note


def test_children_that_cannot_be_listed_do_not_stop_the_kill() -> None:
    world = World(signal_children=True)
    signaller = RaisingSignaller(EMFILE, children_too=True)
    world.reaper.expiry.killer.signaller = signaller
    event = expire_one(world)
    assert event.kind == EventKind.KILLED and signaller.sent == [(100, signal.SIGKILL)]
    assert "EMFILE" in str(kill_of(event).children_error)


def fail_once(call: Callable[..., Any], when: Callable[..., bool]) -> Callable[..., Any]:
    failed: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not failed and when(*args, **kwargs):
            failed.append(True)
            raise RuntimeError("injected")
        return call(*args, **kwargs)

    return wrapper


def test_an_emit_that_fails_after_the_signal_does_not_signal_twice() -> None:
    world = World()
    killer = world.reaper.expiry.killer
    killer.emit = fail_once(killer.emit, lambda kind, *rest, **detail: kind == "killed")
    event = expire_one(world)
    assert world.signaller.sent == [(100, signal.SIGKILL)]  # once
    assert event.kind == EventKind.KILLED and "RuntimeError: injected" in str(kill_of(event).error)
    assert world.reaper.kill_watch.errors_total == 1


def test_an_error_before_the_signal_signals_anyway() -> None:
    world = World()
    killer = world.reaper.expiry.killer
    killer.expire = fail_once(killer.expire, lambda *args: True)  # type: ignore[method-assign]
    event = expire_one(world)
    assert world.signaller.sent == [(100, signal.SIGKILL)]
    assert event.kind == EventKind.KILLED and "injected" in str(kill_of(event).error)


def test_an_error_before_the_signal_then_a_failed_signal_is_kill_failed() -> None:
    world = World()
    killer = world.reaper.expiry.killer
    killer.expire = fail_once(killer.expire, lambda *args: True)  # type: ignore[method-assign]
    world.signaller.outcomes[100] = SignalOutcome(False, "failed", "permission denied (EPERM)")
    event = expire_one(world)
    assert event.kind == EventKind.KILL_FAILED
    assert "injected" in event.reason() and "EPERM" in event.reason()


def test_a_log_line_that_fails_loses_no_outcome(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "timer_core.expiry")

    def broken(*args: object) -> str:
        raise UnicodeError("a handler that cannot encode")

    monkeypatch.setattr("timer_core.engine.kill_outcomes.outcome_line", broken)
    world = World()
    event = expire_one(world)
    assert event.kind == EventKind.KILLED and world.signaller.sent == [(100, signal.SIGKILL)]
    assert world.reaper.kill_watch.errors_total == 1


def test_every_timer_of_a_worker_gets_an_outcome_after_an_error() -> None:
    world = World()
    killer = world.reaper.expiry.killer
    killer.expire = fail_once(killer.expire, lambda *args: True)  # type: ignore[method-assign]
    world.reaper.acquire(ArmRequest(100, "watch", world.at(1), 0))
    world.reaper.acquire(ArmRequest(100, "kill", world.at(1)))
    world.reaper.acquire(ArmRequest(100, "kill-too", world.at(1)))
    world.advance(1)
    world.reaper.expiry.shutdown()
    by_scope = {e.timer.scope_id: e for e in world.events if e.kind != EventKind.ACQUIRED}
    assert {scope: e.kind for scope, e in by_scope.items()} == {
        "watch": "expired",
        "kill": "killed",
        "kill-too": "killed",
    }
    assert world.signaller.sent == [(100, signal.SIGKILL)]
