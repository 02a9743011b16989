"""The library against real worker processes that really get killed."""

from __future__ import annotations

import multiprocessing as mp
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

import timer_core as timer
from tests.sample_events import timer_of
from tests.waiting import wait_until
from tests.workers import hold_local_timer, spawn_sleeper, wait_dead
from timer_core import EventKind, ManualClock, ProcessIdentity, Reaper, TimerEvent, identify
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.event_details import Escalated


class EventLog:
    def __init__(self) -> None:
        self.events: list[TimerEvent] = []
        self._arrived = threading.Condition()

    def __call__(self, event: TimerEvent) -> None:
        with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()

    def wait_for(self, kind: str, timeout: float = 10.0) -> TimerEvent:
        with self._arrived:
            found = self._arrived.wait_for(
                lambda: any(e.kind == kind for e in self.events), timeout
            )
            assert found, f"no {kind} event in {[e.kind for e in self.events]}"
            return next(e for e in self.events if e.kind == kind)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    engine = Reaper(escalate_after=0.5)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def stepped(manual_clock: ManualClock) -> Reaper:
    """A reaper on ``manual_clock`` with no thread of its own: the test moves the clock
    and steps, and a kill (no capturer) is sent before ``step`` returns."""
    return Reaper(clock=manual_clock, escalate_after=0.5, watch_exits=False)


def kinds_after_step(reaper: Reaper) -> list[str]:
    """Reap what is due now, and every event the reaper has published so far."""
    events: list[TimerEvent] = []
    reaper.add_listener(events.append)
    reaper.step()
    reaper.bus.drain()
    return [event.kind for event in events]


@pytest.fixture
def log(reaper: Reaper) -> EventLog:
    """What ``reaper`` emits during the test."""
    events = EventLog()
    reaper.add_listener(events)
    return events


def test_sleeping_worker_is_killed_at_expiry(
    reaper: Reaper, log: EventLog, sleeper: subprocess.Popen[bytes]
) -> None:
    reaper.acquire(ArmRequest(sleeper.pid, "hang", time.time() + 0.2))
    assert wait_dead(sleeper) == -signal.SIGKILL
    killed = log.wait_for(EventKind.KILLED)
    assert killed.timer.pid == sleeper.pid and timer_of(killed).state == "killed"


def test_released_worker_stays_alive(
    stepped: Reaper, manual_clock: ManualClock, sleeper: subprocess.Popen[bytes]
) -> None:
    stepped.acquire(ArmRequest(sleeper.pid, "work", manual_clock.time() + 1.0))
    stepped.release(sleeper.pid, "work")
    manual_clock.advance(1.3)  # past the released deadline
    assert kinds_after_step(stepped) == [EventKind.ACQUIRED, EventKind.RELEASED]
    assert sleeper.poll() is None


def test_a_pid_now_naming_another_process_is_not_signalled(
    stepped: Reaper, manual_clock: ManualClock, sleeper: subprocess.Popen[bytes]
) -> None:
    real = identify(sleeper.pid)
    assert real is not None
    # The timer was acquired by an earlier process that had this pid; it is due now.
    now = manual_clock.time()
    stepped.restore(
        99,
        ProcessIdentity(sleeper.pid, real.create_time - 50),
        ArmRequest(sleeper.pid, "old", now, 9),
        Origin("test"),
        acquired_at=now,
    )
    assert kinds_after_step(stepped) == [EventKind.WORKER_GONE]
    assert sleeper.poll() is None


def test_exited_worker_timers_are_dropped_promptly_without_a_signal(
    reaper: Reaper, log: EventLog, sleeper: subprocess.Popen[bytes]
) -> None:
    reaper.acquire(ArmRequest(sleeper.pid, "long", time.time() + 3600))
    sleeper.terminate()
    sleeper.wait()
    gone = log.wait_for(EventKind.WORKER_GONE, timeout=5)
    assert gone.reason() == "worker exited before its deadline"
    assert reaper.active_count() == 0


def test_sigterm_ignored_escalates_to_sigkill(reaper: Reaper, log: EventLog) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.workers", "ignore-sigterm"], stdout=subprocess.PIPE
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == b"ready"
        reaper.acquire(ArmRequest(worker.pid, "stuck", time.time() + 0.1, signal.SIGTERM))
        assert wait_dead(worker) == -signal.SIGKILL
        escalated = log.wait_for(EventKind.ESCALATED).detail
        assert isinstance(escalated, Escalated) and escalated.sigkilled == (worker.pid,)
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()  # type: ignore[union-attr]


def test_signal_children_kills_the_workers_children_too() -> None:
    engine = Reaper(signal_children=True)
    engine.start()
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.workers", "parent-of-sleeper"], stdout=subprocess.PIPE
    )
    try:
        assert worker.stdout is not None
        grandchild = psutil.Process(int(worker.stdout.readline()))
        engine.acquire(ArmRequest(worker.pid, "loader", time.time() + 0.1))
        assert wait_dead(worker) == -signal.SIGKILL
        grandchild.wait(timeout=10)
        assert not grandchild.is_running()
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()  # type: ignore[union-attr]
        engine.stop()


def test_local_timer_server_kills_a_stuck_mp_worker_and_spares_a_finished_one() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    server = timer.LocalTimerServer(queue, max_interval=60)
    server.start()
    stuck = ctx.Process(target=hold_local_timer, args=(queue, 0.5, "stuck", False))
    done = ctx.Process(target=hold_local_timer, args=(queue, 0.5, "done", True))
    try:
        stuck.start()
        done.start()
        stuck.join(20)
        assert stuck.exitcode == -signal.SIGKILL
        time.sleep(0.5)
        assert done.is_alive()
    finally:
        for process in (stuck, done):
            process.kill()
            process.join()
        server.stop()


def test_local_timer_server_stop_is_prompt_even_with_a_long_max_interval() -> None:
    server = timer.LocalTimerServer(mp.get_context("spawn").Queue(), max_interval=60)
    server.start()
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 5


def test_file_timer_server_kills_and_never_kills_itself(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    fifo = str(tmp_path / "timers.fifo")
    logged: list[str] = []
    server = timer.FileTimerServer(
        fifo, "run", max_interval=10, log_event=lambda n, r: logged.append(n)
    )
    server.start()
    try:
        victim, survivor = spawn_sleeper(), spawn_sleeper()
        sleepers.extend([victim, survivor])
        client = timer.FileTimerClient(fifo)
        for process, deadline in ((victim, 0.2), (survivor, 60)):
            request = timer.FileTimerRequest(process.pid, "s", time.time() + deadline, 9)
            client._send_request(request)
        assert wait_dead(victim) == -signal.SIGKILL
        assert survivor.poll() is None
        assert "kill worker process" in logged
        assert os.stat(fifo).st_mode & 0o777 == 0o600
    finally:
        server.stop()
    assert not os.path.exists(fifo)


def test_file_timer_server_starts_and_stops_with_no_client(tmp_path: Path) -> None:
    server = timer.FileTimerServer(str(tmp_path / "f"), "run", max_interval=30)
    server.start()
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 5


def test_file_timer_client_expires_scope_is_the_callers_file_and_line(tmp_path: Path) -> None:
    fifo = str(tmp_path / "f")
    server = timer.FileTimerServer(fifo, "run")
    server.start()
    try:
        client = timer.FileTimerClient(fifo, signal=0)
        with timer.expires(after=60, client=client):
            line = sys._getframe().f_lineno - 1
            wait_until(server.reaper.active, timeout=5)
            scopes = [t.scope_id for t in server.reaper.active()]
        assert scopes == [f"{__file__}#{line}"]
    finally:
        server.stop()


def test_file_timer_client_without_a_server_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    client = timer.FileTimerClient(str(tmp_path / "nobody"))
    with pytest.raises(BrokenPipeError, match="no FileTimerServer"):
        client.acquire("s", time.time() + 1)


def _fill_pipe(fifo: str) -> tuple[int, int]:
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        while True:
            os.write(writer, b"x" * 4096)
    except BlockingIOError:
        return reader, writer


def test_file_timer_client_waits_for_room_when_the_pipe_is_full(tmp_path: Path) -> None:
    fifo = str(tmp_path / "full.fifo")
    os.mkfifo(fifo)
    reader, writer = _fill_pipe(fifo)
    made_room: list[bool] = []

    def drain() -> None:
        made_room.append(True)  # before the read: the write can only succeed after it
        os.read(reader, 1 << 20)

    drained = threading.Timer(0.3, drain)
    drained.start()
    try:
        timer.FileTimerClient(fifo).acquire("s", time.time() + 60)  # returns once drained
        assert made_room == [True]
    finally:
        drained.join()
        os.close(reader)
        os.close(writer)


def test_file_timer_client_gives_up_on_a_pipe_that_stays_full(tmp_path: Path) -> None:
    fifo = str(tmp_path / "stuck.fifo")
    os.mkfifo(fifo)
    reader, writer = _fill_pipe(fifo)
    try:
        with pytest.raises(BrokenPipeError, match="not keeping up"):
            timer.FileTimerClient(fifo).acquire("s", time.time() + 60)
    finally:
        os.close(reader)
        os.close(writer)
