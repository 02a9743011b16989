"""Who asks (``Origin``) decides what a request may touch, whatever the source: an
owner_uid confines arms, heartbeats and releases to that uid's processes, refused
with a ``refused`` event naming the requester; None leaves them unrestricted; and only
an origin that allows it may hold observe-only timers on the service itself."""

from __future__ import annotations

import pytest

from timer_core import ProcessIdentity, RefusedError
from timer_core.engine import ArmRequest, EventKind, Origin
from timer_core.engine.event_details import Refusal
from timer_core.engine.labels import Labels

from ..world import SERVER_PID, World

OWNER, OTHER = 1001, 1002


@pytest.fixture
def world() -> World:
    world = World()
    world.processes[100] = ProcessIdentity(100, 200.0, uid=OWNER)
    world.processes[101] = ProcessIdentity(101, 201.0, uid=OTHER)
    world.processes[SERVER_PID] = ProcessIdentity(SERVER_PID, 1.0, uid=0)
    return world


class LabelReads(dict[int, Labels]):
    """The fake environments, remembering whose were read."""

    def __init__(self) -> None:
        super().__init__()
        self.pids: list[int] = []

    def get(self, pid: int, default: Labels | None = None) -> Labels | None:  # type: ignore[override]
        self.pids.append(pid)
        return super().get(pid, default)


def refusals(world: World) -> list[str]:
    world.reaper.bus.drain()
    return [
        event.detail.reason
        for event in world.events
        if event.kind == EventKind.REFUSED and isinstance(event.detail, Refusal)
    ]


def test_an_owner_arms_its_own_processes_and_no_one_elses(world: World) -> None:
    world.labels = read = LabelReads()
    origin = Origin("fifo", OWNER, "the FIFO /run/t/1001 of uid 1001")

    timer, created = world.reaper.acquire(ArmRequest(100, "mine", world.at(5)), origin)
    assert created and timer.uid == OWNER
    with pytest.raises(RefusedError) as refused:
        world.reaper.acquire(ArmRequest(101, "theirs", world.at(5)), origin)

    assert refused.value.kind == "forbidden"
    assert [t.pid for t in world.reaper.active()] == [100]
    [reason] = refusals(world)
    assert reason.startswith("the FIFO /run/t/1001 of uid 1001 may only arm")
    assert "pid 101 belongs to uid 1002" in reason
    # The other user's environment is never read for a request that may not touch it.
    assert read.pids == [100]


def test_an_owner_may_not_heartbeat_or_release_another_users_timer(world: World) -> None:
    theirs, _ = world.reaper.acquire(ArmRequest(101, "step", world.at(5)))
    stranger = Origin("http", OWNER)  # no requester text: described by its uid

    with pytest.raises(RefusedError, match="uid 1001 may only arm"):
        world.reaper.acquire(ArmRequest(101, "step", world.at(600)), stranger)
    with pytest.raises(RefusedError, match="uid 1001 may not release") as by_scope:
        world.reaper.release(101, "step", stranger)
    with pytest.raises(RefusedError, match="uid 1001 may not release") as by_id:
        world.reaper.release_id(theirs.id, stranger)

    assert by_scope.value.kind == by_id.value.kind == "forbidden"
    [still] = world.reaper.active()
    assert (still.id, still.expiration_time) == (theirs.id, theirs.expiration_time)
    assert len(refusals(world)) == 3
    # Its own user may.
    released = world.reaper.release_id(theirs.id, Origin("http", OTHER))
    assert released is not None and world.reaper.active() == []


def test_an_origin_without_owner_acts_on_every_users_processes(world: World) -> None:
    free = Origin("fifo")
    for pid in (100, 101):
        world.reaper.acquire(ArmRequest(pid, "s", world.at(5)), free)
    assert world.reaper.release(101, "s", free) is not None
    assert refusals(world) == []


def test_only_an_origin_that_allows_it_observes_the_service_itself(world: World) -> None:
    observe = ArmRequest(SERVER_PID, "self", world.at(5), 0)
    with pytest.raises(RefusedError):
        world.reaper.acquire(observe, Origin("http", may_observe_self=False))
    timer, created = world.reaper.acquire(observe, Origin("api"))
    assert created and timer.signal == 0
    # Never a signal, whoever asks.
    with pytest.raises(RefusedError):
        world.reaper.acquire(ArmRequest(SERVER_PID, "kill", world.at(5), 9), Origin("api"))
