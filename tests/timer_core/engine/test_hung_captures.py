"""Captures that hang never hold a kill: more hung captures than there are capture
slots, a /proc read that never returns, and a py-spy that ignores its timeout and
leaves a grandchild behind. Outcomes are asserted, never timings."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.timer_core.world import BlockingCapturer, World, stack_note
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper
from timer_core import EventKind, ProcessIdentity, Reaper, TimerEvent
from timer_core.diagnosis import proc_report
from timer_core.diagnosis.bounded_subprocess import run_bounded
from timer_core.diagnosis.stack_capture import StackCapturer
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.capture_runner import CaptureRunner
from timer_core.engine.capturer import CapturedStack

WORKERS = 12  # more than the 8 capture slots


@pytest.fixture
def hung() -> Iterator[BlockingCapturer]:
    capturer = BlockingCapturer(budget=0.2)
    yield capturer
    capturer.release.set()


def killed_events(world: World) -> list[TimerEvent]:
    world.reaper.bus.drain()  # the kill threads emit; deliver what they emitted
    return [e for e in world.events if e.kind == EventKind.KILLED]


def killed(world: World, pid: int) -> bool:
    return any(e.timer.pid == pid for e in killed_events(world))


def stack_notes(world: World) -> list[str]:
    return [str(stack_note(e)) for e in killed_events(world)]


def capture_runner(world: World) -> CaptureRunner:
    runner = world.reaper.expiry.captures
    assert runner is not None
    return runner


def test_more_hung_captures_than_slots_delay_no_kill(hung: BlockingCapturer) -> None:
    world = World(capturer=hung)
    pids = range(300, 300 + WORKERS)
    for pid in pids:
        world.processes[pid] = ProcessIdentity(pid, 100.0 + pid)
        world.reaper.acquire(ArmRequest(pid, "hung", world.at(1)))
    world.advance(1)  # all due at the same instant

    assert wait_until(lambda: len(killed_events(world)) == WORKERS, 30)
    assert sorted(pid for pid, _ in world.signaller.sent) == list(pids)
    for event in killed_events(world):
        assert event.stack is None
        note = str(stack_note(event))
        assert "abandoned" in note or "no capture slot" in note, note

    # The hung captures gave their slots back: the next expiry captures, and is killed.
    runner = capture_runner(world)
    assert runner.hung() > 0
    world.processes[400] = ProcessIdentity(400, 500.0)
    world.reaper.acquire(ArmRequest(400, "after", world.at(0)))
    world.advance(0)
    assert wait_until(lambda: killed(world, 400), 30)
    hung.release.set()
    assert wait_until(lambda: runner.hung() == 0)
    world.reaper.expiry.shutdown()
    assert world.reaper.kill_watch.in_flight() == 0


def test_past_the_cap_on_hung_captures_none_is_started(hung: BlockingCapturer) -> None:
    world = World(capturer=hung)
    capture_runner(world).max_hung = 2
    for pid in (100, 101, 102):
        world.reaper.acquire(ArmRequest(pid, "hung", world.at(0)))
        world.advance(0)
        assert wait_until(functools.partial(killed, world, pid))
    notes = stack_notes(world)
    assert "abandoned" in notes[0] and "abandoned" in notes[1]
    assert notes[2] == "2 earlier captures are still hung: none taken"
    world.reaper.expiry.shutdown()


def test_a_proc_read_that_never_returns_does_not_stop_the_kill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As /proc/PID/stack of a process whose exec holds the lock it needs."""
    released = threading.Event()
    real_read = proc_report._read

    def read(path: str) -> str:
        if path.endswith("/stack"):
            released.wait(60)
        return str(real_read(path))

    monkeypatch.setattr("timer_core.diagnosis.proc_report._read", read)
    engine = Reaper(capturer=StackCapturer(budget=0.3, use_py_spy=False))
    events: list[TimerEvent] = []
    engine.add_listener(events.append)
    engine.start()
    worker = spawn_sleeper()
    try:
        engine.acquire(ArmRequest(worker.pid, "stuck", time.time() + 0.2))
        assert_sigkilled(worker)
    finally:
        released.set()
        engine.stop()
    [killed] = [e for e in events if e.kind == EventKind.KILLED]
    assert "abandoned" in str(stack_note(killed))


# A py-spy stand-in that ignores SIGTERM, starts a grandchild, and never finishes.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open(sys.argv[1], "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
time.sleep(300)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_helper_past_its_timeout_is_killed_with_its_group_and_reaped(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    argv = [sys.executable, "-c", STUBBORN, str(pids)]
    with pytest.raises(subprocess.TimeoutExpired):
        run_bounded(argv, timeout=2.0)
    assert pids.exists(), "the helper never started"
    helper, grandchild = map(int, pids.read_text().split())
    assert wait_until(lambda: gone(grandchild))
    with pytest.raises(psutil.NoSuchProcess):  # reaped: not even a zombie
        psutil.Process(helper)


def test_a_helper_that_prints_without_end_is_cut_off_at_the_limit() -> None:
    # A worker's own "py-spy" (issue 20 review) wrote /dev/zero for the whole budget:
    # communicate() kept it all, 500 MB of the root service's memory a second.
    flood = [sys.executable, "-c", "import os\nwhile True: os.write(1, bytes(65536))"]
    result = run_bounded(flood, timeout=60, limit=100_000)
    assert result.truncated
    assert result.stdout == "\0" * 100_000
    assert result.returncode == -signal.SIGKILL


def test_a_helper_within_the_limit_is_read_whole() -> None:
    argv = [sys.executable, "-c", "import sys; print('x' * 99); print('e', file=sys.stderr)"]
    result = run_bounded(argv, timeout=60, limit=100)
    assert (result.returncode, result.stdout, result.stderr) == (0, "x" * 99 + "\n", "e\n")
    assert not result.truncated


def capture_a_sleeper(py_spy: Path, capturer: StackCapturer) -> CapturedStack:
    """A sleeping worker's stack, as ``capturer`` takes it with the script ``py_spy``."""
    py_spy.chmod(0o755)
    capturer.py_spy = str(py_spy)
    worker = spawn_sleeper()
    try:
        identity = ProcessIdentity(worker.pid, psutil.Process(worker.pid).create_time())
        return capturer.capture(identity)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()


def test_py_spy_that_prints_without_end_gives_a_truncated_stack(tmp_path: Path) -> None:
    fake = tmp_path / "py-spy"
    fake.write_text(f"#!{sys.executable}\nimport os\nwhile True: os.write(1, b'x' * 65536)\n")
    captured = capture_a_sleeper(fake, StackCapturer(budget=30.0, max_bytes=50_000))
    assert (captured.method, captured.truncated) == ("py-spy", True), captured.notes
    assert captured.text == "x" * 50_000 + "\n[truncated]\n"


def test_the_helper_gets_a_session_of_its_own(tmp_path: Path) -> None:
    result = run_bounded([sys.executable, "-c", "import os; print(os.getsid(0))"], timeout=30)
    assert result.returncode == 0 and int(result.stdout) != os.getsid(0)


def test_py_spy_that_hangs_leaves_nothing_behind(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    fake = tmp_path / "py-spy"
    fake.write_text(f"#!{sys.executable}\n{STUBBORN.replace('sys.argv[1]', repr(str(pids)))}")
    captured = capture_a_sleeper(fake, StackCapturer(budget=2.0))
    assert captured.method == "proc"
    assert any("timed out" in note for note in captured.notes), captured.notes
    helper, grandchild = map(int, pids.read_text().split())
    assert wait_until(lambda: gone(grandchild) and gone(helper))


def test_past_the_cap_on_captures_under_way_none_is_started(hung: BlockingCapturer) -> None:
    """Thousands of workers expiring at once must not start thousands of threads."""
    world = World(capturer=hung)
    capture_runner(world).max_live = 2
    for pid in (100, 101, 102):
        world.reaper.acquire(ArmRequest(pid, "hung", world.at(1)))
    world.advance(1)
    assert wait_until(lambda: len(killed_events(world)) == 3)
    notes = sorted(stack_notes(world))
    assert notes[0] == "2 captures already under way: none taken"
    assert "abandoned" in notes[1] and "abandoned" in notes[2]
    world.reaper.expiry.shutdown()
