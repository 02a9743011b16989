"""FIFO readers pause while ``may_read`` says no (the service: while its recorder is
behind): requests stay in the pipe, none is lost, and at most one read goes past the
moment it said no."""

from __future__ import annotations

import os
from pathlib import Path

from tests.sample_events import torch_line
from tests.waiting import wait_until
from timer_core import ManualClock, ProcessIdentity, Reaper
from timer_core.engine.process import ProcessSignaller
from timer_core.sources.fifo_dir import FifoDirectory
from timer_core.sources.fifo_source import FifoSource
from timer_core.sources.user_fifos import READ_BUDGET, UserFifos

ME = os.geteuid()
# A day after the ManualClock's start: far enough, and within the 30-day cap.
TOMORROW = ManualClock().time() + 86400


def lines(count: int, pid: int = 100) -> bytes:
    return b"".join(torch_line(pid, f"s{n}", TOMORROW) for n in range(count))


def fake_reaper() -> Reaper:
    return Reaper(
        clock=ManualClock(),
        signaller=ProcessSignaller(protected=frozenset({5})),
        watch_exits=False,
        identify_process=lambda pid: ProcessIdentity(pid, float(pid), ME),
    )


class Gate:
    """A ``may_read`` that says yes ``budget`` times, then no until opened."""

    def __init__(self, budget: int = 0) -> None:
        self.budget = budget

    def __call__(self) -> bool:
        if self.budget > 0:
            self.budget -= 1
            return True
        return False


def test_a_paused_fifo_source_leaves_requests_in_the_pipe(tmp_path: Path) -> None:
    reaper = fake_reaper()
    gate = Gate()
    source = FifoSource(str(tmp_path / "t.fifo"), reaper, may_read=gate)
    try:
        data = lines(3000)  # about 270 KiB: several reads
        fd = os.open(source.path, os.O_WRONLY | os.O_NONBLOCK)
        assert os.write(fd, data) == len(data)  # the pipe holds 1 MiB
        os.close(fd)
        assert source.drain() == 0 and reaper.active_count() == 0
        gate.budget = 1  # one read, then no again: at most 64 KiB goes past it
        read = source.drain()
        assert 0 < read < 3000 and reaper.active_count() == read
        gate.budget = 10**6
        source.drain()
        assert reaper.active_count() == 3000 and source.applied_requests == 3000
    finally:
        source.stop()


def test_the_fifo_thread_waits_while_paused_and_resumes(tmp_path: Path) -> None:
    reaper = fake_reaper()
    allowed = [False]
    source = FifoSource(str(tmp_path / "t.fifo"), reaper, may_read=lambda: allowed[0])
    source.start()
    try:
        fd = os.open(source.path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, lines(100))
        os.close(fd)
        assert not wait_until(lambda: reaper.active_count() > 0, timeout=0.3)
        allowed[0] = True
        assert wait_until(lambda: reaper.active_count() == 100)
    finally:
        source.stop()  # prompt even while paused: the wake pipe ends the wait


def test_paused_user_fifos_read_nothing_until_resumed(tmp_path: Path) -> None:
    reaper = fake_reaper()
    allowed = [False]
    fifos = UserFifos(
        FifoDirectory(str(tmp_path / "fifos")),
        reaper,
        read_uid=lambda pid: ME,
        unrestricted_uids=frozenset(),
        may_read=lambda: allowed[0],
    )
    try:
        path, _ = fifos.ensure(ME)
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, lines(500))
        os.close(fd)
        assert fifos.poll_once(0) == 0 and reaper.active_count() == 0
        allowed[0] = True
        assert 0 < fifos.poll_once(0) <= READ_BUDGET
        while fifos.poll_once(0):
            pass
        assert reaper.active_count() == 500
    finally:
        fifos.stop()
