"""Torch's own worker server, in real processes running torch 2.13's ``_WorkerServer``
after a gloo ``all_reduce``: found from the worker's own listening sockets, asked for
its stack and flight recorder; and refused for a process that merely holds the socket
of a server another process answers (inherited through fork, as from a launcher)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.timer_core.diagnosis.torch_worker_server import TorchWorker, needs_torch, torch_worker
from tests.workers import spawn_sleeper
from timer_core.diagnosis import tcp_diag
from timer_core.diagnosis.proc_sockets import (
    TcpListener,
    UnixListener,
    socket_inodes,
    unix_listeners,
)
from timer_core.diagnosis.worker_server import Endpoint, fetch, find_worker_server
from timer_core.diagnosis.worker_server_capture import WorkerServerCapture, capture_worker_server
from timer_core.diagnosis.worker_server_http import Refusal, Why

pytestmark = needs_torch
BUDGET = 5.0  # generous: a loaded machine must not turn an answer into a timeout


@pytest.fixture(scope="module")
def unix_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchWorker]:
    with torch_worker(str(tmp_path_factory.mktemp("ws") / "worker.sock")) as worker:
        yield worker


@pytest.fixture(scope="module")
def tcp_worker() -> Iterator[TorchWorker]:
    """On TCP, beside the two other sockets a rank 0 listens on: its TCPStore and
    gloo's listener, neither of which speaks HTTP."""
    with torch_worker(tcp=True, store=True) as worker:
        yield worker


def captured(pid: int) -> WorkerServerCapture:
    capture = capture_worker_server(pid, BUDGET)
    assert isinstance(capture, WorkerServerCapture), capture
    return capture


def assert_real_evidence(capture: WorkerServerCapture, function: str = "stuck_in_a_step") -> None:
    assert f"in {function}" in capture.traceback
    assert isinstance(capture.flight_recorder, bytes)
    recorder = json.loads(capture.flight_recorder)
    (entry,) = recorder["entries"]
    assert entry["profiling_name"] == "gloo:all_reduce"
    assert entry["input_sizes"] == [[8]]
    assert recorder["pg_status"]["0"]["last_enqueued_collective"] == "1"
    assert 0 < capture.seconds < BUDGET


def test_a_unix_socket_server_is_found_and_gives_stack_and_flight_recorder(
    unix_worker: TorchWorker,
) -> None:
    capture = captured(unix_worker.pid)
    assert isinstance(capture.endpoint.listener, UnixListener)
    assert capture.endpoint.listener.name.endswith(b"/worker.sock")
    assert_real_evidence(capture)


def test_a_tcp_server_is_found_among_the_ranks_other_listeners(tcp_worker: TorchWorker) -> None:
    from torch._C._distributed_c10d import TCPStore

    capture = captured(tcp_worker.pid)
    assert isinstance(capture.endpoint.listener, TcpListener)
    assert capture.endpoint.listener.port == tcp_worker.port
    assert_real_evidence(capture)
    # Asking the TCPStore for a ping did not break it.
    store = TCPStore("127.0.0.1", tcp_worker.store_port, 1, False)
    store.set("still", "serving")
    assert store.get("still") == b"serving"


def test_a_process_listening_on_nothing_has_no_server() -> None:
    sleeper = spawn_sleeper()
    try:
        answer = find_worker_server(sleeper.pid, time.monotonic() + BUDGET)
        assert isinstance(answer, Refusal) and answer.why is Why.NO_SERVER, answer
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_process_that_is_gone_is_unreadable() -> None:
    sleeper = spawn_sleeper()
    sleeper.kill()
    sleeper.wait()
    answer = find_worker_server(sleeper.pid, time.monotonic() + BUDGET)
    assert isinstance(answer, Refusal) and answer.why is Why.UNREADABLE, answer


def test_inherited_server_sockets_are_not_the_childs(tmp_path: Path) -> None:
    """The child holds the very listening sockets among its descriptors, but its parent
    answers on them: on Unix the peer credentials name the parent, on TCP the answered
    connection is among the parent's descriptors, not the child's."""
    with torch_worker(str(tmp_path / "w.sock"), tcp=True, fork=True) as w:
        deadline = time.monotonic() + BUDGET
        inodes = socket_inodes(w.child, deadline)
        (unix,) = unix_listeners(w.child, inodes)
        tcp = [t for t in tcp_diag.listening(socket.AF_INET6, deadline) if t.inode in inodes]
        assert len(tcp) == 1
        for listener in (unix, tcp[0]):
            answer = fetch(Endpoint(w.child, listener), "ping", 64, deadline)
            assert isinstance(answer, Refusal) and answer.why is Why.NOT_ITS_OWN, answer
            assert fetch(Endpoint(w.pid, listener), "ping", 64, deadline) == b"pong"
        refused = capture_worker_server(w.child, BUDGET)
        assert isinstance(refused, Refusal) and refused.why is Why.NOT_ITS_OWN, refused
        # The parent, which does answer on them, waits for the child at the top level.
        assert_real_evidence(captured(w.pid), function="<module>")
