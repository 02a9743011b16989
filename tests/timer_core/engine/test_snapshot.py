"""Readers of the live timers (the dashboard) never scan under the reaper's lock, share
their scans, and stay within a scan-time budget. Driven on a ManualClock with a
recording signaller: no sleeps, no real signals."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.timer_core.world import World
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.snapshot import ReadsThrottled, TimerReader
from timer_core.engine.timers import LiveTimer


@pytest.fixture
def world() -> World:
    return World()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_four_readers_in_tight_loops_never_hold_the_reapers_lock(world: World) -> None:
    for index in range(5000):
        world.reaper.acquire(
            ArmRequest(100 + index % 3, f"job-{index % 7}/step-{index}", world.at(3600))
        )
    lock_free_during_scans: list[bool] = []
    helper = ThreadPoolExecutor(1)

    def check_the_lock_is_free() -> None:
        # Runs in the scanning thread, between the copy and the scan: another thread must
        # be able to take the reaper's lock (live_timers takes it) meanwhile. Were the
        # scan under the lock, this would wait for it and time out.
        taken = helper.submit(world.reaper.live_timers)
        lock_free_during_scans.append(len(taken.result(timeout=30)) > 0)

    reader = TimerReader(world.reaper.live_timers, share=1e9, on_scan=check_the_lock_is_free)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read(scope: str | None) -> None:
        try:
            while not stop.is_set():
                views, total = reader.soonest(500, scope_contains=scope)
                assert len(views) <= 500 and total >= len(views)
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)
            raise

    readers = [
        threading.Thread(target=read, args=(scope,)) for scope in (None, "job-1", "step-4", "x")
    ]
    for thread in readers:
        thread.start()
    try:
        # Meanwhile the engine arms and reaps: every due timer is signalled, each step.
        for round_ in range(200):
            world.reaper.acquire(ArmRequest(101, f"due-{round_}", world.at(0.5)))
            world.advance(0.5)
            assert world.signaller.sent[-1] == (101, signal.SIGKILL)
    finally:
        stop.set()
        for thread in readers:
            thread.join(30)
        helper.shutdown()
    assert errors == []
    assert len(world.signaller.sent) == 200
    assert reader.scans > 0 and len(lock_free_during_scans) == reader.scans
    assert all(lock_free_during_scans)


def test_a_read_sees_every_change_made_before_it_asked(world: World) -> None:
    reader = TimerReader(world.reaper.live_timers)
    world.reaper.acquire(ArmRequest(100, "first", world.at(60)))
    assert [v.scope_id for v in reader.soonest(10)[0]] == ["first"]
    world.reaper.acquire(ArmRequest(101, "second", world.at(30)))
    views, total = reader.soonest(10)
    assert [v.scope_id for v in views] == ["second", "first"] and total == 2
    world.reaper.release(101, "second")
    assert [v.scope_id for v in reader.soonest(10)[0]] == ["first"]


def test_filters_match_the_engines_own_query(world: World) -> None:
    for index, pid in enumerate([100, 100, 101, 102, 100]):
        world.reaper.acquire(ArmRequest(pid, f"step-{index}", world.at(50 - index)))
    reader = TimerReader(world.reaper.live_timers)
    queries: list[tuple[int, int | None, str | None]] = [
        (2, None, None),
        (10, 100, None),
        (1, 100, "-1"),
        (5, 555, None),
    ]
    for limit, worker, scope in queries:
        views, total = reader.soonest(limit, pid=worker, scope_contains=scope)
        expected = world.reaper.soonest(limit, pid=worker, scope_contains=scope)
        assert (list(views), total) == expected


def test_the_budget_bounds_scan_time_then_reuses_the_last_result_or_refuses(
    world: World,
) -> None:
    world.reaper.acquire(ArmRequest(100, "step", world.at(60)))
    clock = FakeClock()

    def a_scan_takes_a_second() -> None:
        clock.now += 1.0

    reader = TimerReader(
        world.reaper.live_timers,
        share=0.2,
        burst=1.0,
        clock=clock,
        on_scan=a_scan_takes_a_second,
    )
    first = reader.soonest(10)
    assert reader.soonest(10) == first and reader.scans == 2  # 1 s burst, refill: spent
    world.reaper.acquire(ArmRequest(101, "later", world.at(90)))
    # Over budget: the last result of the same query, stale, and no scan.
    assert reader.soonest(10) == first and reader.scans == 2
    # A query with nothing to reuse is refused, saying when to come back.
    with pytest.raises(ReadsThrottled) as refused:
        reader.soonest(10, scope_contains="step")
    assert refused.value.retry_after > 0 and reader.throttled == 1
    clock.now += 5.0  # the budget refills at 0.2 s per second
    _, total = reader.soonest(10)
    assert total == 2 and reader.scans == 3


def test_the_copy_is_the_only_part_under_the_lock(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "step", world.at(60)))
    copies: list[list[LiveTimer]] = []

    def copy() -> list[LiveTimer]:
        copies.append(world.reaper.live_timers())
        return copies[-1]

    reader = TimerReader(copy)
    reader.soonest(10, pid=100)
    assert len(copies) == 1 and [t.scope_id for t in copies[0]] == ["step"]
