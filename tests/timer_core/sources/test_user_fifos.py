"""Per-user FIFOs read by one thread: each uid targets its own processes only, garbage
is skipped, and a flood on one FIFO does not starve another. Driven round by round
(``poll_once``) on a fake process table: no sleeps, no real signals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sample_events import torch_line
from tests.waiting import wait_until
from timer_core import EventKind, ManualClock, ProcessIdentity, Reaper, TimerEvent
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.process import ProcessSignaller
from timer_core.sources.fifo_dir import FifoDirectory
from timer_core.sources.user_fifos import READ_BUDGET, UserFifos, real_uid

ME = os.geteuid()
# A day after the ManualClock's start: far enough, and within the 30-day cap.
TOMORROW = ManualClock().time() + 86400
USER = 54321  # the second user's uid in the fake process table (as root, a real FIFO)
needs_root = pytest.mark.skipif(ME != 0, reason="a FIFO for another uid needs root")


def line(pid: int, scope: str = "s", expiration_time: float = TOMORROW, signal: int = 9) -> bytes:
    return torch_line(pid, scope, expiration_time, signal)


class World:
    """UserFifos over a real directory, applying to a Reaper whose process table is
    fake: pids 100-149 belong to ``owner``, 150-199 to someone else (uid 7)."""

    def __init__(self, path: str, owner: int, *, unrestricted: frozenset[int]) -> None:
        self.owner = owner
        self.uids = {pid: owner if pid < 150 else 7 for pid in range(100, 200)}
        self.reaper = Reaper(
            clock=ManualClock(),
            signaller=ProcessSignaller(protected=frozenset({5})),
            watch_exits=False,
            identify_process=lambda pid: (
                ProcessIdentity(pid, float(pid), self.uids[pid]) if pid in self.uids else None
            ),
        )
        self.events: list[TimerEvent] = []
        self.reaper.add_listener(self.events.append)
        self.fifos = UserFifos(
            FifoDirectory(path),
            self.reaper,
            read_uid=self.uids.get,
            unrestricted_uids=unrestricted,
        )

    def write(self, uid: int, data: bytes) -> None:
        fd = os.open(self.fifos.directory.fifo_path(uid), os.O_WRONLY | os.O_NONBLOCK)
        try:
            assert os.write(fd, data) == len(data)
        finally:
            os.close(fd)

    def active(self) -> set[tuple[int, str]]:
        return {(timer.pid, timer.scope_id) for timer in self.reaper.active()}

    def refusals(self) -> list[str]:
        self.reaper.bus.drain()
        return [e.reason() for e in self.events if e.kind == EventKind.REFUSED]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # This process's own uid plays the user: nothing is unrestricted, so the rule
    # applies to it as to anyone, and no root is needed.
    made = World(str(tmp_path / "fifos"), ME, unrestricted=frozenset())
    made.fifos.ensure(ME)
    yield made
    made.fifos.stop()


def test_a_user_arms_and_releases_timers_for_its_own_processes(world: World) -> None:
    world.write(ME, line(100) + line(101, "b"))
    world.fifos.poll_once(0)
    assert world.active() == {(100, "s"), (101, "b")}
    world.write(ME, line(100, expiration_time=-1))
    world.fifos.poll_once(0)
    assert world.active() == {(101, "b")}
    assert world.fifos.applied_requests == 3 and world.refusals() == []


def test_a_user_cannot_target_another_uids_process(world: World) -> None:
    world.write(ME, line(150) + line(151, signal=0))
    world.fifos.poll_once(0)
    assert world.active() == set()
    path = world.fifos.directory.fifo_path(ME)
    reasons = world.refusals()
    assert len(reasons) == 2 and world.fifos.refused_requests == 2
    assert all(f"the FIFO {path} of uid {ME}" in r and "belongs to uid 7" in r for r in reasons)


def test_a_user_cannot_release_another_uids_timer(world: World) -> None:
    world.reaper.acquire(ArmRequest(150, "theirs", TOMORROW))  # armed by root, say
    world.write(ME, line(150, "theirs", expiration_time=-1))
    world.fifos.poll_once(0)
    assert world.active() == {(150, "theirs")}
    assert "may not release" in world.refusals()[0]


def test_a_process_that_changed_uid_since_its_first_timer_is_refused(world: World) -> None:
    world.write(ME, line(100))
    world.fifos.poll_once(0)
    world.uids[100] = 7  # e.g. a setuid program that changed it: the engine's record is old
    world.write(ME, line(100, "again"))
    world.fifos.poll_once(0)
    assert world.active() == {(100, "s")}
    assert "pid 100 belongs to uid 7" in world.refusals()[0]


def test_garbage_is_skipped_and_the_good_lines_beside_it_apply(world: World) -> None:
    garbage = [b"\xff\xfe\n", b"{not json\n", b'{"pid": "100"}\n', b"x" * 5000 + b"\n"]
    world.write(ME, line(100) + b"".join(garbage) + line(101))
    world.fifos.poll_once(0)
    assert world.active() == {(100, "s"), (101, "s")}
    assert world.fifos.malformed_lines == 4


def test_an_unrestricted_uid_may_target_anything(tmp_path: Path) -> None:
    world = World(str(tmp_path / "fifos"), ME, unrestricted=frozenset({ME}))
    try:
        world.fifos.ensure(ME)
        world.write(ME, line(150))
        world.fifos.poll_once(0)
        assert world.active() == {(150, "s")} and world.refusals() == []
    finally:
        world.fifos.stop()


def test_ensure_answers_whether_the_fifo_was_made(world: World) -> None:
    path, made = world.fifos.ensure(ME)
    assert (path, made) == (world.fifos.directory.fifo_path(ME), False)
    os.unlink(path)
    assert world.fifos.ensure(ME) == (path, True)
    world.write(ME, line(100))
    world.fifos.poll_once(0)
    assert world.active() == {(100, "s")}


def test_a_fifo_replaced_on_disk_is_made_anew_by_verify(world: World) -> None:
    path = world.fifos.directory.fifo_path(ME)
    os.unlink(path)
    Path(path).write_text("planted")
    world.fifos.verify()
    world.write(ME, line(100))
    world.fifos.poll_once(0)
    assert world.active() == {(100, "s")}


def test_requests_already_in_a_replaced_fifo_still_apply(world: World) -> None:
    world.write(ME, line(100))
    os.unlink(world.fifos.directory.fifo_path(ME))
    world.fifos.ensure(ME)
    assert world.active() == {(100, "s")}


def test_fifos_stay_on_disk_and_are_taken_over_by_the_next_run(tmp_path: Path) -> None:
    first = World(str(tmp_path / "fifos"), ME, unrestricted=frozenset())
    first.fifos.start([ME])
    first.fifos.stop()
    second = World(str(tmp_path / "fifos"), ME, unrestricted=frozenset())
    second.fifos.start()
    try:
        assert second.fifos.uids() == [ME]
        second.write(ME, line(100))
        assert wait_until(lambda: (100, "s") in second.active())
    finally:
        second.fifos.stop()


@needs_root
def test_a_flood_on_one_fifo_does_not_starve_another(tmp_path: Path) -> None:
    world = World(str(tmp_path / "fifos"), USER, unrestricted=frozenset({ME}))
    try:
        world.fifos.ensure(USER)
        world.fifos.ensure(ME)
        flood = b"".join(line(100, f"flood-{n}") for n in range(2000))
        assert len(flood) > 4 * READ_BUDGET
        world.write(USER, flood)
        world.write(ME, line(150, "quiet"))
        world.fifos.poll_once(0)
        # One round: the quiet FIFO got its turn while most of the flood still waits.
        assert (150, "quiet") in world.active()
        assert world.fifos.applied_requests < 2000 // 4
        while world.fifos.poll_once(0):
            pass
        assert len(world.active()) == 2001
    finally:
        world.fifos.stop()


def test_real_uid_reads_the_kernels_view() -> None:
    assert real_uid(os.getpid()) == os.getuid()
    assert real_uid(2**22 + 1) is None
