"""The engine knows when a kill is overdue: due, and not acted on within the stack
budget plus the margin. Driven on a ManualClock: no sleeps, no timed assertions."""

from __future__ import annotations

import pytest

from tests.timer_core.world import BlockingCapturer, World
from tests.waiting import wait_until
from timer_core.engine.arm_request import ArmRequest, Origin


def test_a_due_timer_the_reaper_has_not_popped_is_overdue_and_counted_once() -> None:
    world = World(overdue_margin=1.0)  # no capture: the budget is 0
    watch = world.reaper.kill_watch
    world.reaper.acquire(ArmRequest(100, "step", world.at(5)))
    world.clock.advance(5.5)  # due, but the reaper has not stepped: within the margin
    assert watch.check().count == 0
    world.clock.advance(1.5)  # 2 s past the deadline, 1 s past the margin
    overdue = watch.check()
    assert overdue.count == 1 and overdue.oldest_seconds == pytest.approx(2.0)
    assert "1 due kill not sent within 1s of the deadline" in (overdue.problem() or "")
    assert watch.check().count == 1
    assert watch.overdue_total == 1  # counted once, however often it is checked

    world.advance(0)  # the reaper steps: the worker is signalled
    assert world.signaller.sent == [(100, 9)]
    assert watch.check().count == 0
    assert watch.overdue_total == 1


def test_a_released_or_moved_timer_left_on_the_heap_is_not_overdue() -> None:
    world = World(overdue_margin=1.0)
    world.reaper.acquire(ArmRequest(100, "released", world.at(1)))
    world.reaper.release(100, "released")
    world.reaper.acquire(ArmRequest(101, "moved", world.at(1)))
    world.reaper.acquire(ArmRequest(101, "moved", world.at(60)))  # a heartbeat
    world.clock.advance(10)
    assert world.reaper.kill_watch.check().count == 0


def test_deadlines_that_passed_while_the_service_was_down_are_due_from_the_start() -> None:
    world = World(overdue_margin=1.0)
    request = ArmRequest(100, "old", world.at(-3600), 9)
    world.reaper.restore(7, world.processes[100], request, Origin("http"), acquired_at=0.0)
    world.reaper.kill_watch.origin = world.clock.monotonic()  # as Reaper.start() does
    assert world.reaper.kill_watch.check().count == 0  # an hour late, but not our lateness
    world.clock.advance(2)
    assert world.reaper.kill_watch.check().count == 1  # still not reaped 2 s after start


def test_a_kill_stuck_behind_a_capture_that_never_returns_is_overdue() -> None:
    capturer = BlockingCapturer(budget=60.0)  # the kill would wait up to 60 s for it
    world = World(capturer=capturer, overdue_margin=1.0)
    watch = world.reaper.kill_watch
    try:
        world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
        world.advance(1)  # popped: handed to a kill thread, which waits for the capture
        assert capturer.started.wait(10)
        assert watch.in_flight() == 1 and watch.check().count == 0

        world.clock.advance(62)  # the budget and the margin have passed
        overdue = watch.check()
        assert overdue.count == 1 and overdue.oldest_seconds == pytest.approx(62.0)
        assert world.signaller.sent == []
    finally:
        capturer.release.set()
    assert wait_until(lambda: "killed" in world.kinds())
    assert world.signaller.sent == [(100, 9)]
    assert watch.check().count == 0
    assert watch.overdue_total == 1 and watch.in_flight() == 0
    world.reaper.expiry.shutdown()


def test_a_late_kill_nobody_checked_on_is_still_counted() -> None:
    capturer = BlockingCapturer(budget=60.0)
    world = World(capturer=capturer, overdue_margin=1.0)
    world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    world.advance(1)
    assert capturer.started.wait(10)
    world.clock.advance(100)
    capturer.release.set()  # signalled 100 s late, and no health check ever ran
    assert wait_until(lambda: "killed" in world.kinds())
    world.reaper.expiry.shutdown()
    assert world.reaper.kill_watch.overdue_total == 1
