"""A job's first expiry captures every live process of the job before any signal to it,
within the one budget; later expiries within the window join instead of capturing the
job again. Driven on a ManualClock with fake processes; outcomes asserted, never timings."""

from __future__ import annotations

import threading

from tests.sample_events import captures_of, timer_of
from tests.timer_core.world import World
from tests.waiting import wait_until
from timer_core import EventKind, ProcessIdentity, TimerEvent
from timer_core.engine import CapturedStack, Labels
from timer_core.engine.arm_request import ArmRequest

JOB = "job-7"
RANK_PIDS = {0: 500, 1: 501, 2: 502, 3: 503}


class RecordingCapturer:
    """Captures at once (or, for ``blocking`` pids, not until released), noting which
    pids were captured and whether any signal had been sent by then."""

    def __init__(self, world: World, blocking: frozenset[int]) -> None:
        self.world = world
        self.blocking = blocking
        self.release = threading.Event()
        self.captured: list[tuple[int, int]] = []  # (pid, signals sent before it)
        self._lock = threading.Lock()

    def capture(
        self, identity: ProcessIdentity, dump_signal: int | None, *, give_up_at: float
    ) -> CapturedStack:
        with self._lock:
            self.captured.append((identity.pid, len(self.world.signaller.sent)))
        if identity.pid in self.blocking:
            self.release.wait(30)
        return CapturedStack("py-spy", f"stack of {identity.pid}\n", 0.0)


def job_world(
    window: float | None = 60.0, blocking: frozenset[int] = frozenset(), budget: float = 5.0
) -> tuple[World, RecordingCapturer]:
    holder: dict[str, RecordingCapturer] = {}

    class Late:
        """The capturer needs the world (its signaller), which needs the capturer."""

        def __init__(self) -> None:
            self.budget = budget

        def capture(
            self, identity: ProcessIdentity, dump_signal: int | None, *, give_up_at: float
        ) -> CapturedStack:
            return holder["capturer"].capture(identity, dump_signal, give_up_at=give_up_at)

    world = World(capturer=Late(), incident_window=window)
    holder["capturer"] = RecordingCapturer(world, blocking=blocking)
    for rank, pid in RANK_PIDS.items():
        world.processes[pid] = ProcessIdentity(pid, 100.0 + pid)
        world.labels[pid] = Labels(JOB, rank, rank, len(RANK_PIDS))
    return world, holder["capturer"]


def events_of(world: World, kind: str) -> list[TimerEvent]:
    world.reaper.bus.drain()
    return [event for event in world.events if event.kind == kind]


def arm_job(world: World, stuck_rank: int) -> None:
    """Every rank armed; the stuck rank's deadline comes first."""
    for rank, pid in RANK_PIDS.items():
        world.reaper.acquire(ArmRequest(pid, "step", world.at(1 if rank == stuck_rank else 100)))


def test_the_first_expiry_captures_every_rank_before_any_signal() -> None:
    world, capturer = job_world()
    arm_job(world, stuck_rank=2)
    world.advance(1)

    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 1, 30)
    assert world.signaller.sent == [(RANK_PIDS[2], 9)]
    # All four processes captured, each before the job's first (and only) signal.
    assert sorted(pid for pid, _ in capturer.captured) == sorted(RANK_PIDS.values())
    assert all(signals_before == 0 for _, signals_before in capturer.captured)

    [incident] = events_of(world, EventKind.INCIDENT)
    assert (
        timer_of(incident).labels.job_id == JOB and timer_of(incident).labels.rank == 2
    )  # the trigger is the stuck rank
    assert world.events.index(incident) < world.events.index(events_of(world, "killed")[0])
    by_rank = {capture.timer.labels.rank or 0: capture for capture in captures_of(incident)}
    assert sorted(by_rank) == [0, 1, 2, 3] and None not in {
        c.timer.labels.rank for c in captures_of(incident)
    }
    assert [rank for rank, c in by_rank.items() if c.expiring] == [2]
    for rank, capture in by_rank.items():
        assert capture.stack is not None
        assert capture.stack.text == f"stack of {RANK_PIDS[rank]}\n"
        assert capture.timer.labels == Labels(JOB, rank, rank, 4)
    assert incident.detail.as_json() == {"job_id": JOB, "processes": 4, "stacks": 4}


def test_later_expiries_within_the_window_join_without_capturing_the_job_again() -> None:
    world, capturer = job_world(window=200.0)
    arm_job(world, stuck_rank=2)
    world.advance(1)
    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 1, 30)

    world.advance(99)  # the others' deadlines, 99 s later: within the window
    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 4, 30)
    assert len(events_of(world, EventKind.INCIDENT)) == 1
    # Each later expiry captured only its own process, with its own kill.
    assert len(capturer.captured) == 4 + 3
    for event in events_of(world, EventKind.KILLED):
        assert event.stack is not None and timer_of(event).labels.job_id == JOB


def test_an_expiry_after_the_window_opens_a_new_incident() -> None:
    world, _ = job_world(window=10.0)
    arm_job(world, stuck_rank=2)
    world.advance(1)
    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 1, 30)
    world.advance(99)
    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 4, 30)
    [first, second] = events_of(world, EventKind.INCIDENT)
    assert timer_of(first).labels.rank == 2
    # The three due together are captured as one, before any of them is signalled.
    assert len(captures_of(second)) == 3 and all(c.expiring for c in captures_of(second))


def test_a_hung_capture_of_a_peer_does_not_hold_the_kill_beyond_the_budget() -> None:
    world, capturer = job_world(blocking=frozenset({RANK_PIDS[0]}), budget=0.3)
    arm_job(world, stuck_rank=2)
    world.advance(1)
    try:
        assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 1, 30)
        [incident] = events_of(world, EventKind.INCIDENT)
        notes = {c.timer.labels.rank: c.note for c in captures_of(incident) if c.stack is None}
        assert list(notes) == [0] and "abandoned" in notes[0]
        assert world.signaller.sent == [(RANK_PIDS[2], 9)]
    finally:
        capturer.release.set()


def test_without_incidents_or_labels_an_expiry_captures_only_its_worker() -> None:
    world, capturer = job_world(window=None)
    arm_job(world, stuck_rank=2)
    world.advance(1)
    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 1, 30)
    assert events_of(world, EventKind.INCIDENT) == []
    assert [pid for pid, _ in capturer.captured] == [RANK_PIDS[2]]

    unlabelled, capturer = job_world()
    unlabelled.labels.clear()
    arm_job(unlabelled, stuck_rank=1)
    unlabelled.advance(1)
    assert wait_until(lambda: len(events_of(unlabelled, EventKind.KILLED)) == 1, 30)
    assert events_of(unlabelled, EventKind.INCIDENT) == []
    assert [pid for pid, _ in capturer.captured] == [RANK_PIDS[1]]


def test_another_users_worker_with_the_same_job_id_captures_only_its_own_kind() -> None:
    """A job id is any string: a worker of another uid claiming it must neither get
    this job's ranks dumped nor hold back this job's own incident."""
    world, capturer = job_world()
    for pid in RANK_PIDS.values():
        world.processes[pid] = ProcessIdentity(pid, 100.0 + pid, 1000)
    world.processes[600] = ProcessIdentity(600, 700.0, 2000)
    world.labels[600] = Labels(JOB, 0, 0, 4)
    world.reaper.acquire(ArmRequest(600, "decoy", world.at(1)))
    arm_job(world, stuck_rank=2)
    world.reaper.acquire(
        ArmRequest(RANK_PIDS[2], "step", world.at(2))
    )  # the real hang, a second later
    world.advance(1)
    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 1, 30)
    assert [pid for pid, _ in capturer.captured] == [600]  # none of uid 1000's ranks
    world.advance(1)
    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 2, 30)
    decoy, real = events_of(world, EventKind.INCIDENT)
    assert [c.timer.pid for c in captures_of(decoy)] == [600]
    assert sorted(c.timer.pid for c in captures_of(real)) == sorted(RANK_PIDS.values())
