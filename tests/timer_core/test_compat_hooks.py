"""What code written against torch's servers reaches into: ``_timers``, overridden
``_reap_worker`` and ``is_process_running``, ``_request_count``, ``stop()`` before
``start()``. With real worker processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

import timer_core as timer
from tests.sample_events import torch_line
from tests.waiting import wait_until
from tests.workers import wait_dead
from timer_core import file_based_local_timer


@pytest.fixture
def worker(sleeper: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    return sleeper


class Server(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


AnyServer = TypeVar("AnyServer", bound=Server)


@contextmanager
def running(server: AnyServer) -> Iterator[AnyServer]:
    """``server``, started, and stopped afterwards."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def write_line(fifo: Path, pid: int, scope: str, expiration_time: float, signum: int = 9) -> None:
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, torch_line(pid, scope, expiration_time, signum))
    finally:
        os.close(fd)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_file_server_shows_its_timers_as_torch_keys_them_read_only(
    tmp_path: Path, worker: subprocess.Popen[bytes]
) -> None:
    fifo = tmp_path / "timers.fifo"
    server = timer.FileTimerServer(str(fifo), "run")
    with running(server):
        deadline = time.time() + 60
        write_line(fifo, worker.pid, "a", deadline)
        write_line(fifo, worker.pid, "b", deadline)
        assert wait_until(lambda: len(server._timers) == 2)
        request = server._timers[(worker.pid, "a")]
        assert isinstance(request, timer.FileTimerRequest)
        assert (request.worker_pid, request.scope_id, request.signal) == (worker.pid, "a", 9)
        with pytest.raises(TypeError):
            server._timers[(worker.pid, "c")] = request  # type: ignore[index]


def test_request_count_counts_refused_requests_like_torch(
    tmp_path: Path, worker: subprocess.Popen[bytes]
) -> None:
    fifo = tmp_path / "timers.fifo"
    server = timer.FileTimerServer(str(fifo), "run")
    with running(server):
        write_line(fifo, worker.pid, "ok", time.time() + 60)
        write_line(fifo, 1, "init", time.time() + 60)  # refused: pid 1
        write_line(fifo, worker.pid, "ok", -1)  # a release
        assert wait_until(lambda: server._request_count == 3)
        assert len(server._timers) == 0


def test_stopping_a_server_that_never_started_removes_its_fifo_and_closes_it(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "timers.fifo"
    before = open_fds()
    server = timer.FileTimerServer(str(fifo), "run")
    assert fifo.exists()
    server.stop()
    assert not fifo.exists()
    assert open_fds() <= before


class RecordingFileServer(timer.FileTimerServer):
    """A subclass that reaps in its own way: it records, then sends SIGTERM."""

    reaped: list[tuple[int, int]]

    def _reap_worker(self, worker_pid: int, signal: int) -> bool:
        self.reaped.append((worker_pid, signal))
        os.kill(worker_pid, 15)
        return True


def test_an_overridden_reap_worker_reaps_instead_of_the_engine(
    tmp_path: Path, worker: subprocess.Popen[bytes]
) -> None:
    fifo = tmp_path / "timers.fifo"
    server = RecordingFileServer(str(fifo), "run")
    server.reaped = []
    with running(server):
        write_line(fifo, worker.pid, "hung", time.time() + 0.2)
        assert wait_dead(worker) == -signal.SIGTERM  # the override's signal, not SIGKILL
        assert server.reaped == [(worker.pid, 9)]


class NeverRunningFileServer(timer.FileTimerServer):
    @staticmethod
    def is_process_running(pid: int) -> bool:
        return False


def test_an_overridden_is_process_running_that_says_no_spares_the_worker(
    tmp_path: Path, worker: subprocess.Popen[bytes]
) -> None:
    fifo = tmp_path / "timers.fifo"
    events: list[str] = []
    server = NeverRunningFileServer(str(fifo), "run", log_event=lambda name, _: events.append(name))
    with running(server):
        write_line(fifo, worker.pid, "hung", time.time() + 0.2)
        # The engine asks the override when the request arrives: it says the worker is
        # not running, so nothing is armed and nothing is signalled.
        assert wait_until(lambda: server._request_count == 1)
        assert len(server._timers) == 0
        assert wait_dead(worker, timeout=1.0) is None
        assert "kill worker process" not in events


class RecordingLocalServer(timer.LocalTimerServer):
    reaped: list[int]

    def _reap_worker(self, worker_id: int) -> bool:
        self.reaped.append(worker_id)
        os.kill(worker_id, 15)
        return True


def test_a_local_server_subclass_reaps_with_its_own_reap_worker(
    worker: subprocess.Popen[bytes],
) -> None:
    queue = mp.get_context("spawn").Queue()
    server = RecordingLocalServer(queue, max_interval=0.05)
    server.reaped = []
    server.start()
    try:
        queue.put(timer.TimerRequest(worker.pid, "hung", time.time() + 0.2))
        assert wait_dead(worker) == -signal.SIGTERM
        assert server.reaped == [worker.pid]
        assert len(server._timers) == 0
    finally:
        server.stop()
        queue.close()
        queue.join_thread()


def test_expired_timers_go_through_log_debug_info_for_expired_timers_as_in_torch(
    tmp_path: Path, worker: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, dict[int, list[str]]]] = []
    monkeypatch.setattr(
        file_based_local_timer,
        "log_debug_info_for_expired_timers",
        lambda run_id, expired: calls.append((run_id, expired)),
    )
    fifo = tmp_path / "timers.fifo"
    server = timer.FileTimerServer(str(fifo), "run-7")
    with running(server):
        write_line(fifo, worker.pid, "hung", time.time() + 0.2)
        assert wait_dead(worker) == -signal.SIGKILL
        assert wait_until(lambda: len(calls) == 1)
        run_id, expired = calls[0]
        assert run_id == "run-7" and list(expired) == [worker.pid]
        assert json.loads(expired[worker.pid][0])["scope_id"] == "hung"
