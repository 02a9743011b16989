"""Expiries of a job that come while its incident's capture is still running wait for
it, and take the stacks it took: no rank of the job is signalled before every stack of
the job is in, and no process is dumped twice at once (a second py-spy on a process
being dumped fails to suspend it). Found with real torchrun: the ranks' deadlines fall
milliseconds apart, and the second one was killed, with a failed capture of its own,
a second before the job's incident was published. Driven on a ManualClock; outcomes
asserted, never timings."""

from __future__ import annotations

from tests.sample_events import captures_of
from tests.timer_core.engine.test_job_incidents import RANK_PIDS, events_of, job_world
from tests.timer_core.world import World
from tests.waiting import wait_until
from timer_core import EventKind
from timer_core.engine import RankStack
from timer_core.engine.arm_request import ArmRequest


def arm_one_step_apart(world: World, stuck_rank: int) -> None:
    """The stuck rank's deadline first; its peers' one (fake) second later."""
    for rank, pid in RANK_PIDS.items():
        world.reaper.acquire(ArmRequest(pid, "step", world.at(1 if rank == stuck_rank else 2)))


def test_expiries_during_the_jobs_capture_wait_for_it_and_reuse_its_stacks() -> None:
    world, capturer = job_world(blocking=frozenset({RANK_PIDS[0]}), budget=60.0)
    arm_one_step_apart(world, stuck_rank=2)
    world.advance(1)  # rank 2 opens the incident; the capture of rank 0 hangs
    assert wait_until(lambda: len(capturer.captured) == 4, 30)
    world.advance(1)  # ranks 0, 1 and 3 expire while the job's capture runs
    capturer.release.set()

    assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 4, 30)
    # Each process dumped once, before any signal to the job.
    assert sorted(pid for pid, _ in capturer.captured) == sorted(RANK_PIDS.values())
    assert all(signals_before == 0 for _, signals_before in capturer.captured)
    [incident] = events_of(world, EventKind.INCIDENT)
    kills = events_of(world, EventKind.KILLED)
    assert all(world.events.index(incident) < world.events.index(kill) for kill in kills)
    # Every kill carries the stack the job's capture took of its process.
    taken = {c.timer.pid: c.stack for c in captures_of(incident)}
    assert all(kill.stack is not None and kill.stack == taken[kill.timer.pid] for kill in kills)


def test_a_hung_job_capture_holds_the_later_expiries_no_longer_than_their_budget() -> None:
    world, capturer = job_world(blocking=frozenset({RANK_PIDS[0]}), budget=0.5)
    arm_one_step_apart(world, stuck_rank=2)
    try:
        world.advance(1)
        assert wait_until(lambda: len(capturer.captured) == 4, 30)
        world.advance(1)
        # The capture of rank 0 never ends: every rank is killed all the same.
        assert wait_until(lambda: len(events_of(world, EventKind.KILLED)) == 4, 30)
        [incident] = events_of(world, EventKind.INCIDENT)
        missing: list[RankStack] = [c for c in captures_of(incident) if c.stack is None]
        assert [c.timer.labels.rank for c in missing] == [0]
        assert sorted(pid for pid, _ in world.signaller.sent) == sorted(RANK_PIDS.values())
    finally:
        capturer.release.set()
