"""One user's hung captures cannot take every capture slot: a hostile uid whose every
capture hangs gets at most its share, and another user's kill, due at the same
instant, still gets its stack. Driven on a ManualClock with a fake capturer; outcomes
asserted, never timings."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.timer_core.world import World, stack_note
from tests.waiting import wait_until
from timer_core import EventKind, ProcessIdentity, TimerEvent
from timer_core.engine import CapturedStack
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.capture_runner import CaptureRunner

HOSTILE_UID = 999
ROOT_VICTIM = 50
HOSTILE_PIDS = range(300, 312)  # 12: more than the 8 slots


class HangsForOneUser:
    """A capturer whose captures of ``HOSTILE_UID``'s workers never return until
    released (as py-spy blocked on a FIFO the worker mapped), and others' at once.
    Counts how many of the hostile ones ever ran at the same time."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.hostile_running = 0
        self.most_hostile_at_once = 0

    def capture(
        self, identity: ProcessIdentity, dump_signal: int | None, *, give_up_at: float
    ) -> CapturedStack:
        if identity.uid != HOSTILE_UID:
            return CapturedStack("py-spy", f"stack of {identity.pid}\n", 0.01)
        with self._lock:
            self.hostile_running += 1
            self.most_hostile_at_once = max(self.most_hostile_at_once, self.hostile_running)
        self.release.wait(60)
        with self._lock:
            self.hostile_running -= 1
        return CapturedStack("proc", "released\n", 0.0)


@pytest.fixture
def capturer() -> Iterator[HangsForOneUser]:
    capturer = HangsForOneUser(budget=0.5)
    yield capturer
    capturer.release.set()


def killed(world: World) -> dict[int, TimerEvent]:
    world.reaper.bus.drain()
    return {e.timer.pid: e for e in world.events if e.kind == EventKind.KILLED}


def runner_of(world: World) -> CaptureRunner:
    runner = world.reaper.expiry.captures
    assert runner is not None
    return runner


def arm_flood_and_victim(world: World, seconds: float) -> None:
    for pid in HOSTILE_PIDS:
        world.processes[pid] = ProcessIdentity(pid, 100.0 + pid, uid=HOSTILE_UID)
        world.reaper.acquire(ArmRequest(pid, "hung", world.at(seconds)))
    world.processes[ROOT_VICTIM] = ProcessIdentity(ROOT_VICTIM, 7.0, uid=0)
    world.reaper.acquire(ArmRequest(ROOT_VICTIM, "victim", world.at(seconds)))


def test_a_flood_of_hung_captures_leaves_other_users_a_slot(capturer: HangsForOneUser) -> None:
    world = World(capturer=capturer)
    runner = runner_of(world)
    arm_flood_and_victim(world, 1)
    world.advance(1)  # the 12 hostile workers and root's victim fall due together

    assert wait_until(lambda: len(killed(world)) == len(HOSTILE_PIDS) + 1, 30)
    victim = killed(world)[ROOT_VICTIM]
    assert victim.stack is not None and victim.stack.method == "py-spy", victim.detail
    assert capturer.most_hostile_at_once == runner.slots_per_user == 4  # half of the 8
    hostile_notes = [str(stack_note(killed(world)[pid])) for pid in HOSTILE_PIDS]
    assert all("abandoned" in n or "no capture slot" in n for n in hostile_notes)
    assert sorted(pid for pid, _ in world.signaller.sent) == sorted([*HOSTILE_PIDS, ROOT_VICTIM])
    world.reaper.expiry.shutdown()


def test_roots_kill_does_not_queue_behind_the_floods_kills() -> None:
    """Each hostile kill waits on a kill thread for its hung capture, here for a whole
    minute: root's victim is killed, with its stack, while they all still wait."""
    capturer = HangsForOneUser(budget=60.0)
    world = World(capturer=capturer)
    try:
        arm_flood_and_victim(world, 1)
        world.advance(1)
        assert wait_until(lambda: ROOT_VICTIM in killed(world), 30)
        assert killed(world)[ROOT_VICTIM].stack is not None
        assert not any(pid in killed(world) for pid in HOSTILE_PIDS)  # still waiting
    finally:
        capturer.release.set()
    assert wait_until(lambda: len(killed(world)) == len(HOSTILE_PIDS) + 1, 30)
    world.reaper.expiry.shutdown()


def test_past_its_share_of_hung_captures_a_user_gets_none_and_others_still_do(
    capturer: HangsForOneUser,
) -> None:
    world = World(capturer=capturer)
    runner = runner_of(world)
    runner.max_hung_per_user = 2

    for round_ in range(3):
        arm_flood_and_victim(world, 0)
        world.advance(0)
        assert wait_until(lambda: len(killed(world)) == len(HOSTILE_PIDS) + 1, 30)
        victim = killed(world)[ROOT_VICTIM]
        assert victim.stack is not None, f"round {round_}: {victim.detail}"
        world.events.clear()

    # The hostile captures of the first round still hang: the user is at its share,
    # and is refused outright, with a note that says why, while root is not.
    assert runner.hung() >= 2
    assert capturer.hostile_running <= runner.slots_per_user
    arm_flood_and_victim(world, 0)
    world.advance(0)
    assert wait_until(lambda: len(killed(world)) == len(HOSTILE_PIDS) + 1, 30)
    notes = {str(stack_note(killed(world)[pid])) for pid in HOSTILE_PIDS}
    assert any(f"of uid {HOSTILE_UID} are still hung: none taken" in n for n in notes), notes
    assert killed(world)[ROOT_VICTIM].stack is not None

    capturer.release.set()
    assert wait_until(lambda: runner.hung() == 0, 30)
    world.reaper.expiry.shutdown()
    assert world.reaper.kill_watch.in_flight() == 0
