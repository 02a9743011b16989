"""Workers that outlive their SIGKILL: a real process held in uninterruptible sleep (``D``)
by a FUSE filesystem that reads its request and never answers it. SIGKILL cannot end
that sleep; only tearing the filesystem down does. Needs root and /dev/fuse (skips
otherwise)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.timer_core.diagnosis.stuck_fuse import worker_held_in_fuse
from tests.waiting import wait_until
from tests.workers import spawn_sleeper, wait_dead
from timer_core import EventKind, ManualClock, Reaper, Timer, TimerEvent, TimerState
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.event_details import Escalated, EventDetail, Unkillable
from timer_core.engine.kernel_state import KernelState, read_kernel_state
from timer_core.engine.process import ProcessIdentity, identify
from timer_core.engine.timers import LiveTimer
from timer_core.engine.unkillable import UnkillableWatch

AFTER = 0.5


@pytest.fixture
def held(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A worker asleep in a lookup on a FUSE mount that never answers (interruptibly,
    until a signal); the mount is torn down when the test ends."""
    with worker_held_in_fuse(tmp_path) as worker:
        yield worker
    # The filesystem is gone: the worker's wait ends, and the fatal signal it had (the
    # SIGTERM it was sent first, or the SIGKILL) takes it.
    assert wait_dead(worker) in (-signal.SIGKILL, -signal.SIGTERM)


def unkillable_events(events: list[TimerEvent]) -> list[Unkillable]:
    found = []
    for event in events:
        if event.kind == EventKind.UNKILLABLE:
            assert isinstance(event.detail, Unkillable)
            found.append(event.detail)
    return found


def test_a_worker_held_in_d_after_its_sigkill_is_reported_once_then_its_exit(
    tmp_path: Path, manual_clock: ManualClock
) -> None:
    reaper = Reaper(clock=manual_clock, watch_exits=False, unkillable_after=AFTER)
    assert reaper.unkillable is not None
    events: list[TimerEvent] = []
    reaper.add_listener(events.append)
    with worker_held_in_fuse(tmp_path) as worker:
        reaper.acquire(ArmRequest(worker.pid, "step", manual_clock.time() + 1))
        manual_clock.advance(1.5)
        reaper.step()  # SIGKILL, sent before step returns (no capturer)
        # Delivered, and not taken: the kernel waits for the filesystem's answer.
        assert wait_until(lambda: read_kernel_state(worker.pid).letter == "D")
        assert worker.poll() is None
        reaper.unkillable.check_due()
        reaper.bus.drain()
        assert unkillable_events(events) == []  # not yet: ``AFTER`` has not passed

        manual_clock.advance(AFTER)
        reaper.unkillable.check_due()
        reaper.unkillable.check_due()  # once per worker, however often it is looked at
        reaper.bus.drain()
        [stuck] = unkillable_events(events)
        assert (stuck.state, stuck.state_name) == ("D", "disk sleep")
        assert stuck.wchan == "request_wait_answer"
        assert stuck.seconds == pytest.approx(AFTER)
        assert stuck.as_json() == {
            "state": "D",
            "wchan": "request_wait_answer",
            "seconds": AFTER,
            "state_name": "disk sleep",
        }
        assert reaper.unkillable.stuck() == 1
        event = next(e for e in events if e.kind == EventKind.UNKILLABLE)
        assert isinstance(event.timer, Timer) and event.timer.pid == worker.pid
        assert event.timer.state == TimerState.KILLED
        manual_clock.advance(2.0)
    # The filesystem is torn down: the worker dies of its SIGKILL at last.
    assert wait_dead(worker) == -signal.SIGKILL

    def exit_reported() -> bool:
        reaper.unkillable.poll_exits(0.1)  # type: ignore[union-attr]
        reaper.bus.drain()
        return len(unkillable_events(events)) == 2

    assert wait_until(exit_reported)
    exited = unkillable_events(events)[1]
    assert exited.exited and exited.seconds == pytest.approx(AFTER + 2.0)
    assert exited.as_json() == {
        "state": None,
        "wchan": None,
        "seconds": AFTER + 2.0,
        "exited": True,
    }
    assert reaper.unkillable.stuck() == 0
    kinds = [event.kind for event in events]
    assert kinds == ["acquired", "killed", "unkillable", "unkillable"]


def test_a_worker_that_dies_of_its_sigkill_is_not_reported(
    manual_clock: ManualClock, sleeper: subprocess.Popen[bytes]
) -> None:
    reaper = Reaper(clock=manual_clock, watch_exits=False, unkillable_after=AFTER)
    assert reaper.unkillable is not None
    events: list[TimerEvent] = []
    reaper.add_listener(events.append)
    reaper.acquire(ArmRequest(sleeper.pid, "step", manual_clock.time() + 1))
    manual_clock.advance(1.5)
    reaper.step()
    assert wait_dead(sleeper) == -signal.SIGKILL
    manual_clock.advance(AFTER)
    reaper.unkillable.check_due()
    reaper.bus.drain()
    assert [event.kind for event in events] == ["acquired", "killed"]
    assert reaper.unkillable.stuck() == 0


def test_an_escalated_sigkill_is_watched_too_on_the_reapers_own_threads(
    held: subprocess.Popen[bytes],
) -> None:
    """SIGTERM first: its default action is fatal, so the worker leaves its interruptible
    wait for the uninterruptible one, and outlives the SIGKILL that follows."""
    worker = held
    reaper = Reaper(escalate_after=0.2, unkillable_after=AFTER)
    arrived = threading.Condition()
    events: list[TimerEvent] = []

    def listen(event: TimerEvent) -> None:
        with arrived:
            events.append(event)
            arrived.notify_all()

    reaper.add_listener(listen)
    reaper.start()
    try:
        reaper.acquire(ArmRequest(worker.pid, "step", time.time() + 0.1, signal.SIGTERM))
        with arrived:
            assert arrived.wait_for(lambda: unkillable_events(events), 30), events
        escalated = next(e.detail for e in events if e.kind == EventKind.ESCALATED)
        assert isinstance(escalated, Escalated) and escalated.sigkilled == (worker.pid,)
        [stuck] = unkillable_events(events)
        assert stuck.state == "D" and stuck.wchan == "request_wait_answer"
        assert stuck.seconds >= AFTER
        assert worker.poll() is None
    finally:
        reaper.stop()


class _Said(list[EventDetail]):
    """An ``Emit`` that keeps what the watch said."""

    def __call__(self, kind: EventKind, timer: LiveTimer, detail: EventDetail) -> Timer:
        assert kind == EventKind.UNKILLABLE
        self.append(detail)
        return timer.snapshot(TimerState.KILLED)


def _live_timer(identity: ProcessIdentity) -> LiveTimer:
    return LiveTimer(7, identity, "step", signal.SIGKILL, "test", 0.0, 1.0, 1.0)


class _Blocked:
    """A /proc read that does not return until released: what a read of a process stuck
    in the kernel is not promised not to do (no real one can be made to on demand)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, pid: int) -> KernelState:
        self.release.wait(30)
        return KernelState("D", "disk sleep", "nfs_wait")


def test_a_proc_read_that_never_returns_is_given_up_and_said(
    manual_clock: ManualClock, sleeper: subprocess.Popen[bytes]
) -> None:
    identity = identify(sleeper.pid)
    assert identity is not None
    said = _Said()
    blocked = _Blocked()
    watch = UnkillableWatch(
        manual_clock,
        AFTER,
        said,
        read_within=0.2,
        read_state=blocked,
    )
    watch.sigkilled(_live_timer(identity))
    manual_clock.advance(AFTER)
    looking = threading.Thread(target=watch.check_due)
    looking.start()
    looking.join(10)
    # The look gave up on the read (a hung read would hold this thread forever).
    assert not looking.is_alive()
    blocked.release.set()
    [stuck] = said
    assert isinstance(stuck, Unkillable)
    assert stuck.state is None and stuck.wchan is None
    assert stuck.note == f"/proc/{sleeper.pid} did not answer within 0.2s"
    # The kill path's call never waits on a look: it only queues.
    watch.sigkilled(_live_timer(identity))
    watch.stop()


def test_no_more_looks_hang_than_the_cap_the_next_worker_waits_its_turn(
    manual_clock: ManualClock, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """A user's workers whose /proc reads all hang cannot make the watch pile up threads:
    past ``max_hung_looks``, a due worker is looked at later, once a read returns."""
    sleepers.extend(spawn_sleeper() for _ in range(2))
    identities = [identify(process.pid) for process in sleepers]
    said = _Said()
    blocked = _Blocked()
    watch = UnkillableWatch(
        manual_clock, AFTER, said, read_within=0.2, read_state=blocked, max_hung_looks=1
    )
    for identity in identities:
        assert identity is not None
        watch.sigkilled(_live_timer(identity))
    manual_clock.advance(AFTER)
    watch.check_due()
    [first] = said
    assert isinstance(first, Unkillable) and first.note is not None  # its read hangs
    manual_clock.advance(1.0)
    watch.check_due()
    assert len(said) == 1  # the second waits: the one hung read is the cap
    blocked.release.set()
    assert wait_until(
        lambda: (
            not any(
                t.name == "timer-unkillable-read" and t.is_alive() for t in threading.enumerate()
            )
        )
    )
    manual_clock.advance(1.0)
    watch.check_due()
    second = said[1]
    assert isinstance(second, Unkillable) and (second.state, second.note) == ("D", None)
    assert watch.stuck() == 2
    watch.stop()


def test_a_pid_that_names_another_process_now_is_not_reported(
    manual_clock: ManualClock, sleeper: subprocess.Popen[bytes]
) -> None:
    identity = identify(sleeper.pid)
    assert identity is not None
    said = _Said()
    watch = UnkillableWatch(
        manual_clock,
        AFTER,
        said,
        identify_process=lambda pid: ProcessIdentity(pid, identity.create_time + 5),
    )
    watch.sigkilled(_live_timer(identity))
    manual_clock.advance(AFTER)
    watch.check_due()
    assert said == [] and watch.stuck() == 0
    watch.stop()


def test_unkillable_after_must_be_a_positive_number_of_seconds(
    manual_clock: ManualClock,
) -> None:
    for after in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="> 0"):
            UnkillableWatch(manual_clock, after, _Said())
