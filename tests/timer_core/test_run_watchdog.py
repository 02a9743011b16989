"""``_run_watchdog``: one pass of torch's watchdog on both compat servers.

The servers are not started where a kill is asserted, so the Reaper's own thread is
not running: only the pass under test can have killed the worker.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from unittest import mock

import pytest

import timer_core as timer
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

SendTimer = Callable[[int, str, float], None]


class WatchedServer(Protocol):
    def _run_watchdog(self) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


def two_sleepers(sleepers: list[subprocess.Popen[bytes]]) -> tuple[int, int]:
    """A worker whose timer is due and one whose timer is an hour away."""
    sleepers.extend([spawn_sleeper(), spawn_sleeper()])
    return sleepers[0].pid, sleepers[1].pid


def assert_pass_kills_only_the_due_worker(
    server: timer.LocalTimerServer | timer.FileTimerServer,
    send: SendTimer,
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    due_pid, later_pid = two_sleepers(sleepers)
    send(due_pid, "due", time.time() - 1)
    send(later_pid, "later", time.time() + 3600)

    server._run_watchdog()

    assert_sigkilled(sleepers[0])
    assert sleepers[1].poll() is None
    assert list(server._timers) == [(later_pid, "later")]


def test_local_pass_applies_the_queue_and_kills_the_due_worker(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    queue = mp.get_context("spawn").Queue()
    server = timer.LocalTimerServer(queue, max_interval=1)

    def send(pid: int, scope: str, expiration_time: float) -> None:
        queue.put(timer.TimerRequest(pid, scope, expiration_time))

    assert_pass_kills_only_the_due_worker(server, send, sleepers)


def test_file_pass_reads_the_fifo_and_kills_the_due_worker(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    fifo = str(tmp_path / "timers.fifo")
    server = timer.FileTimerServer(fifo, "run_watchdog")
    client = timer.FileTimerClient(fifo)

    def send(pid: int, scope: str, expiration_time: float) -> None:
        client._send_request(timer.FileTimerRequest(pid, scope, expiration_time, signal.SIGKILL))

    try:
        assert_pass_kills_only_the_due_worker(server, send, sleepers)
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["local", "file"])
def test_a_running_server_runs_the_pass_until_stopped(kind: str, tmp_path: Path) -> None:
    server: WatchedServer
    if kind == "local":
        server = timer.LocalTimerServer(mp.get_context("spawn").Queue(), max_interval=0.01)
    else:
        server = timer.FileTimerServer(str(tmp_path / "timers.fifo"), "run_watchdog", 0.01)
    # Wrapped on the instance, as torch's test_watchdog_call_count does.
    passes = mock.MagicMock(wraps=server._run_watchdog)
    server._run_watchdog = passes  # type: ignore[method-assign]
    server.start()
    try:
        assert wait_until(lambda: passes.call_count >= 3)
    finally:
        server.stop()
    stopped_at = passes.call_count
    time.sleep(0.1)
    assert passes.call_count == stopped_at
