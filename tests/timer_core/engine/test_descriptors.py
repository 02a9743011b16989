"""File descriptors: the limit is raised on start, the kill path keeps a reserve, and
pidfds that watch workers stop at their budget (the rest are swept)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest

from tests.waiting import wait_until
from tests.workers import spawn_sleeper
from timer_core import ProcessIdentity, identify
from timer_core.engine.descriptors import kill_path_reserve, open_descriptors, pidfd_budget
from timer_core.engine.exit_watcher import ExitWatcher


def pidfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        except OSError:
            continue  # the listing's own descriptor, closed already
    return count


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_the_soft_limit_is_raised_to_the_hard_limit() -> None:
    code = (
        "from timer_core.engine.descriptors import raise_descriptor_limit\n"
        "print(*raise_descriptor_limit())"
    )
    output = subprocess.run(
        ["prlimit", "--nofile=300:700", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.split() == ["300", "700"]


def test_the_reserve_and_the_pidfd_budget_leave_room_for_each_other() -> None:
    assert kill_path_reserve(256) == 128 and pidfd_budget(256) == 64
    assert kill_path_reserve(1024) == 128 and pidfd_budget(1024) == 448
    assert kill_path_reserve(65536) == 8192
    assert kill_path_reserve(100) == 50  # never more than half
    before = open_descriptors()
    with open(os.devnull, "rb"):
        assert open_descriptors() == before + 1


def test_workers_beyond_the_pidfd_budget_are_swept_and_their_exits_still_seen() -> None:
    exited: list[int] = []
    seen = threading.Lock()

    def on_exit(identity: ProcessIdentity) -> None:
        with seen:
            exited.append(identity.pid)

    watcher = ExitWatcher(on_exit, max_pidfds=2)
    workers = [spawn_sleeper() for _ in range(4)]
    before = pidfds()
    watcher.start()
    try:
        for worker in workers:
            identity = identify(worker.pid)
            assert identity is not None
            watcher.watch(identity)
        assert pidfds() == before + 2  # the other two are swept: their exits below prove it
        for worker in workers:
            worker.kill()
            worker.wait()
        assert wait_until(lambda: sorted(exited) == sorted(w.pid for w in workers), 30)
    finally:
        watcher.stop()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_an_engine_stopped_twice_stops_quietly_and_keeps_no_descriptor() -> None:
    """A service's shutdown may stop its engine twice (a lifespan entered again, a
    supervisor and a signal): the second stop must neither raise on the closed pipe nor
    close a descriptor number that now belongs to someone else."""
    before = open_descriptors()
    watcher = ExitWatcher(lambda identity: None)
    watcher.start()
    watcher.stop()
    reused_read, reused_write = os.pipe()  # may take the numbers the watcher closed
    try:
        watcher.stop()
        os.write(reused_write, b"x")  # still open: the second stop closed nothing
        assert os.read(reused_read, 1) == b"x"
    finally:
        os.close(reused_read)
        os.close(reused_write)
    assert open_descriptors() == before
