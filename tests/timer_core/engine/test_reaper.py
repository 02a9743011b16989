"""The engine, driven step by step on a ManualClock: no sleeps, no real signals."""

from __future__ import annotations

import signal

import pytest

from tests.sample_events import timer_of
from tests.timer_core.world import PARENT_PID, SERVER_PID, World, kill_of, no_kill_of
from timer_core import EventKind, ProcessIdentity, RefusedError, TimerEvent
from timer_core.engine import Labels
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.event_details import Refusal
from timer_core.engine.process import SignalOutcome


@pytest.fixture
def world() -> World:
    return World()


def test_expired_timer_kills_at_its_deadline_and_not_before(world: World) -> None:
    view, created = world.reaper.acquire(ArmRequest(100, "step", world.at(5)))
    assert created and view.state == "active"
    world.advance(4.999)
    assert world.signaller.sent == []
    world.advance(0.001)
    assert world.signaller.sent == [(100, signal.SIGKILL)]
    assert world.kinds() == ["acquired", "killed"]
    assert timer_of(world.events[-1]).state == "killed"
    assert kill_of(world.events[-1]).late == pytest.approx(0.0)
    assert world.reaper.active_count() == 0


def test_step_returns_the_next_deadline_so_the_loop_sleeps_exactly_that_long(
    world: World,
) -> None:
    world.reaper.acquire(ArmRequest(100, "late", world.at(30)))
    world.reaper.acquire(ArmRequest(101, "early", world.at(2)))
    assert world.reaper.step() == pytest.approx(world.clock.monotonic() + 2)


def test_release_disarms(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    released = world.reaper.release(100, "step")
    assert released is not None and released.state == "released"
    world.advance(10)
    assert world.signaller.sent == []
    assert world.kinds() == ["acquired", "released"]
    assert world.reaper.release(100, "step") is None


def test_reacquire_is_a_heartbeat_that_moves_the_deadline(world: World) -> None:
    first, _ = world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    world.advance(0.9)
    second, created = world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    assert not created and second.id == first.id
    world.advance(0.5)
    assert world.signaller.sent == []
    world.advance(0.5)
    assert world.signaller.sent == [(100, signal.SIGKILL)]
    assert world.kinds() == ["acquired", "extended", "killed"]


def test_wall_clock_step_after_receipt_moves_no_deadline(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "step", world.at(10)))
    world.clock.step_wall_clock(3600)  # NTP jumps an hour forward
    world.advance(9)
    assert world.signaller.sent == []
    world.advance(1)
    assert world.signaller.sent == [(100, signal.SIGKILL)]


def test_deadline_in_the_past_fires_on_the_next_step(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "step", world.at(-5)))
    world.advance(0)
    assert world.signaller.sent == [(100, signal.SIGKILL)]


@pytest.mark.parametrize("signum", [0, -1, -15])
def test_signal_at_most_zero_observes_only(world: World, signum: int) -> None:
    world.reaper.acquire(ArmRequest(100, "watch", world.at(1), signum))
    world.advance(1)
    assert world.signaller.sent == []
    assert world.kinds() == ["acquired", "expired"]
    assert timer_of(world.events[-1]).state == "expired"
    assert no_kill_of(world.events[-1]).reason == "observe only"


@pytest.mark.parametrize(
    ("pid", "why"),
    [
        (0, "init or every process"),
        (1, "init or every process"),
        (-1, "process group"),
        (-100, "process group"),
        (SERVER_PID, "itself"),
        (PARENT_PID, "ancestors"),
        (2**40, "out of range"),
        (True, "integer"),
        ("100", "integer"),
        (555, "no process"),
    ],
)
def test_dangerous_or_unknown_pids_are_refused_with_an_event(
    world: World, pid: int, why: str
) -> None:
    with pytest.raises(RefusedError, match=why):
        world.reaper.acquire(ArmRequest(pid, "step", world.at(0)))
    world.advance(1)
    assert world.signaller.sent == []
    assert world.kinds() == ["refused"]
    assert why in world.events[0].reason()
    assert world.reaper.active_count() == 0


@pytest.mark.parametrize(
    ("expiration", "signum", "why"),
    [
        (float("nan"), 9, "finite"),
        (float("inf"), 9, "finite"),
        ("soon", 9, "number"),
        (None, 9, "number"),
        (10.0, 999, "not a signal"),
        (10.0, 9.0, "integer"),
    ],
)
def test_ill_typed_requests_are_refused(
    world: World, expiration: object, signum: object, why: str
) -> None:
    with pytest.raises(RefusedError, match=why):
        world.reaper.acquire(ArmRequest(100, "step", expiration, signum))  # type: ignore[arg-type]
    assert world.kinds() == ["refused"]


def test_the_server_may_observe_itself_but_never_ask_to_be_killed(world: World) -> None:
    world.processes[SERVER_PID] = ProcessIdentity(SERVER_PID, 1.0)
    world.reaper.acquire(ArmRequest(SERVER_PID, "watch", world.at(1), 0))
    with pytest.raises(RefusedError, match="itself"):
        world.reaper.acquire(ArmRequest(SERVER_PID, "watch", world.at(1), 9))
    world.advance(1)
    assert world.signaller.sent == []
    assert world.kinds() == ["acquired", "refused", "expired"]


def test_a_reused_pid_is_not_signalled(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    world.signaller.outcomes[100] = SignalOutcome(False, "gone", "pid now names another process")
    world.advance(1)
    assert world.kinds() == ["acquired", "worker_gone"]
    assert timer_of(world.events[-1]).state == "expired"
    assert "another process" in world.events[-1].reason()


def test_a_failed_kill_is_recorded_with_its_reason(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    world.signaller.outcomes[100] = SignalOutcome(False, "failed", "permission denied (EPERM)")
    world.advance(1)
    assert world.kinds() == ["acquired", "kill_failed"]
    assert timer_of(world.events[-1]).state == "expired"
    assert no_kill_of(world.events[-1]).reason == "permission denied (EPERM)"


def test_worker_exit_ends_its_timers_without_a_signal(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "a", world.at(5)))
    world.reaper.acquire(ArmRequest(100, "b", world.at(6)))
    world.reaper.acquire(ArmRequest(101, "c", world.at(5)))
    world.reaper.worker_exited(world.processes[100])
    world.advance(5)
    assert world.signaller.sent == [(101, signal.SIGKILL)]
    assert world.kinds().count("worker_gone") == 2


def test_exit_of_a_previous_process_with_the_same_pid_is_ignored(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "a", world.at(5)))
    world.reaper.worker_exited(ProcessIdentity(100, 1.0))  # an older process that had pid 100
    assert world.reaper.active_count() == 1


def test_one_signal_per_worker_when_several_timers_expire_together(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "a", world.at(1)))
    world.reaper.acquire(ArmRequest(100, "b", world.at(1)))
    world.advance(1)
    assert world.signaller.sent == [(100, signal.SIGKILL)]
    assert world.kinds().count("killed") == 2


def test_escalates_to_sigkill_when_the_worker_survives_its_signal() -> None:
    world = World(escalate_after=3.0)
    world.reaper.acquire(ArmRequest(100, "step", world.at(1), signal.SIGTERM))
    world.advance(1)
    assert world.signaller.sent == [(100, signal.SIGTERM)]
    world.advance(2.9)
    assert world.signaller.sent == [(100, signal.SIGTERM)]
    world.advance(0.1)
    assert world.signaller.sent == [(100, signal.SIGTERM), (100, signal.SIGKILL)]
    assert world.kinds()[-1] == "escalated"
    # The timer ended killed at its first signal, and stays so.
    assert timer_of(world.events[-1]).state == "killed"


def test_no_escalation_when_the_worker_died_of_the_first_signal() -> None:
    world = World(escalate_after=3.0)
    world.reaper.acquire(ArmRequest(100, "step", world.at(1), signal.SIGTERM))
    world.advance(1)
    del world.processes[100]
    world.advance(3)
    assert world.signaller.sent == [(100, signal.SIGTERM)]


def test_children_are_signalled_too_when_asked() -> None:
    world = World(signal_children=True)
    world.signaller.child_map[100] = [world.processes[200]]
    world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    world.advance(1)
    assert world.signaller.sent == [(100, signal.SIGKILL), (200, signal.SIGKILL)]
    assert kill_of(world.events[-1]).children == (200,)


def test_clear_worker_releases_every_timer_of_that_worker(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "a", world.at(1)))
    world.reaper.acquire(ArmRequest(100, "b", world.at(1)))
    assert len(world.reaper.clear_worker(100, reason="test")) == 2
    world.advance(5)
    assert world.signaller.sent == []


def test_restore_rearms_with_the_recorded_identity() -> None:
    world = World()
    identity = world.processes[100]
    request = ArmRequest(100, "s", world.at(-1), 9)
    view = world.reaper.restore(41, identity, request, Origin("http"), acquired_at=world.at(-60))
    assert view is not None and view.id == 41
    assert world.kinds() == []  # its acquisition was recorded before the restart
    world.advance(0)
    assert world.signaller.sent == [(100, signal.SIGKILL)]
    assert world.kinds() == ["killed"]


def test_restore_of_a_gone_worker_signals_nothing() -> None:
    world = World()
    stale = ProcessIdentity(100, 1.0)  # pid 100 is now another process
    request = ArmRequest(100, "s", world.at(5), 9)
    assert world.reaper.restore(7, stale, request, Origin("http"), acquired_at=0) is None
    world.advance(10)
    assert world.signaller.sent == []
    assert world.kinds() == ["worker_gone"]
    assert timer_of(world.events[0]).state == "released"


def test_heartbeats_do_not_grow_the_heap_without_bound(world: World) -> None:
    for i in range(20_000):
        world.reaper.acquire(ArmRequest(100, "step", world.at(60 + i * 1e-3)))
    assert world.reaper.heap_size() < 10_000


def test_a_listener_that_raises_does_not_stop_the_kill_or_other_listeners() -> None:
    def broken(event: TimerEvent) -> None:
        raise RuntimeError("listener bug")

    world = World()
    bus = world.reaper.bus
    bus.remove_listener(world.record)
    bus.add_listener(broken)
    bus.add_listener(world.record)
    world.reaper.acquire(ArmRequest(100, "step", world.at(1)))
    world.advance(1)
    assert world.signaller.sent == [(100, signal.SIGKILL)]
    assert world.kinds() == ["acquired", "killed"]


def test_event_sequence_numbers_increase(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "a", world.at(1)))
    world.reaper.release(100, "a")
    world.reaper.acquire(ArmRequest(101, "b", world.at(1)))
    world.reaper.bus.drain()
    seqs = [event.seq for event in world.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert world.events[0].kind == EventKind.ACQUIRED


def test_expired_by_worker_is_torchs_get_expired_timers(world: World) -> None:
    world.reaper.acquire(ArmRequest(100, "late", world.at(10)))
    world.reaper.acquire(ArmRequest(100, "due", world.at(1)))
    world.reaper.acquire(ArmRequest(101, "due", world.at(2)))
    expired = world.reaper.expired_by_worker(world.at(2))
    assert {pid: [t.scope_id for t in timers] for pid, timers in expired.items()} == {
        100: ["due"],
        101: ["due"],
    }


def test_apply_follows_torchs_negative_expiration_means_release(world: World) -> None:
    assert world.reaper.apply(ArmRequest(100, "s", world.at(5), 9), Origin("fifo"))
    assert world.reaper.apply(ArmRequest(100, "s", -1, 0), Origin("fifo"))
    assert not world.reaper.apply(ArmRequest(0, "s", world.at(5), 9), Origin("fifo"))
    assert world.kinds() == ["acquired", "released", "refused"]


def test_a_worker_that_loops_is_identified_once_and_forgotten_when_it_exits() -> None:
    world = World()
    looked_up: list[int] = []
    lookup = world.processes.get

    def counting(pid: int) -> ProcessIdentity | None:
        looked_up.append(pid)
        return lookup(pid)

    world.reaper._identify = counting
    for _ in range(100):
        world.reaper.acquire(ArmRequest(100, "step", world.at(5)))
        world.reaper.release(100, "step")
    assert looked_up == [100]
    world.reaper.worker_exited(world.processes[100])
    world.reaper.acquire(ArmRequest(100, "step", world.at(5)))  # pid 100 again: read afresh
    assert looked_up == [100, 100]


def test_a_refused_request_with_unstorable_numbers_keeps_them_as_text(world: World) -> None:
    with pytest.raises(RefusedError):
        world.reaper.acquire(ArmRequest(10**30, "s", world.at(1), 10**20))
    world.reaper.bus.drain()
    [refused] = world.events
    assert (refused.timer.pid, refused.timer.signal) == (-1, 0)
    assert isinstance(refused.detail, Refusal) and refused.detail.requested_pid == str(10**30)


def test_soonest_gives_the_nearest_deadlines_with_filters_and_totals(world: World) -> None:
    for index, pid in enumerate([100, 100, 101, 102, 100]):
        world.reaper.acquire(ArmRequest(pid, f"step-{index}", world.at(50 - index)))
    views, total = world.reaper.soonest(2)
    assert [v.scope_id for v in views] == ["step-4", "step-3"] and total == 5
    views, total = world.reaper.soonest(10, pid=100)
    assert [v.scope_id for v in views] == ["step-4", "step-1", "step-0"] and total == 3
    views, total = world.reaper.soonest(1, pid=100, scope_contains="-1")
    assert [v.scope_id for v in views] == ["step-1"] and total == 1
    assert world.reaper.soonest(5, pid=555) == ([], 0)


@pytest.mark.parametrize("source", ["http", "fifo", "api"])
def test_a_deadline_more_than_30_days_away_is_refused_from_every_source(source: str) -> None:
    world = World()
    far = world.at(30 * 24 * 3600 + 60)
    with pytest.raises(RefusedError, match="more than 30 days away") as refused:
        world.reaper.acquire(ArmRequest(100, "s", far), Origin(source))
    assert refused.value.field == "expiration_time"
    # torch's convention (apply) refuses it the same way, and says so in an event.
    assert world.reaper.apply(ArmRequest(100, "t", far, 9), Origin(source)) is False
    assert world.kinds() == [EventKind.REFUSED, EventKind.REFUSED]
    assert world.reaper.active() == []
    world.reaper.acquire(ArmRequest(100, "s", world.at(30 * 24 * 3600 - 60)), Origin(source))
    assert len(world.reaper.active()) == 1


def test_restored_workers_read_their_environment_once_and_label_new_scopes() -> None:
    read: list[int] = []
    world = World()

    def labels_of(pid: int) -> Labels:
        read.append(pid)
        return Labels("job", 1, 1, 2)

    world.reaper._labels_of = labels_of
    identity = world.processes[100]
    for timer_id, scope in ((7, "a"), (8, "b")):
        request = ArmRequest(identity.pid, scope, world.at(60), 9)
        world.reaper.restore(timer_id, identity, request, Origin("fifo"), acquired_at=1.0)
    view, created = world.reaper.acquire(ArmRequest(100, "after", world.at(60)))
    assert created and (view.labels.job_id, view.labels.rank) == ("job", 1)
    assert read == [100]
