"""Hostile workers of a second user against the root service's worker-server client:
one that points its socket at another user's real torch worker server, one that holds
a connection to it, and fake servers that answer ping and then never answer, drip,
send 10 MB or endless headers, or answer garbage. Each is refused with its reason,
within the deadline, and no other process's stack is ever attributed to it."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.second_user import SERVICE_AS_ROOT, SYSTEM_PYTHON, SecondUser, readable_copy, shared_dir
from tests.timer_core.diagnosis.stuck_fuse import never_answering_fuse
from tests.timer_core.diagnosis.torch_worker_server import TorchWorker, needs_torch, torch_worker
from tests.waiting import wait_until
from timer_core.diagnosis.worker_server import Endpoint, fetch, find_worker_server
from timer_core.diagnosis.worker_server_capture import WorkerServerCapture, capture_worker_server
from timer_core.diagnosis.worker_server_http import Refusal, Why

pytestmark = SERVICE_AS_ROOT
FAKE = Path(__file__).with_name("fake_worker_server.py")
# The deadline of the cases that must run into it; the others get BUDGET, so that a
# loaded machine (two cores, shared) never turns their answer into a timeout.
DEADLINE = 0.5
BUDGET = 5.0
# What a refused capture may take past its deadline: a thread switch, a socket close.
SLACK = 0.5


@pytest.fixture(scope="module")
def victim() -> Iterator[tuple[TorchWorker, Path]]:
    """Root's real torch worker, whose socket every user may connect to."""
    with shared_dir() as directory:
        path = directory / "victim.sock"
        with torch_worker(str(path)) as worker:
            os.chmod(path, 0o777)
            yield worker, path


@pytest.fixture
def hostile_dir(second_user: SecondUser) -> Iterator[Path]:
    """A directory the second user owns, for its sockets."""
    with shared_dir() as directory:
        own = directory / "hostile"
        own.mkdir()
        os.chown(own, second_user.uid, second_user.gid)
        yield own


def start_fake(
    user: SecondUser, directory: Path, *mode: str, name: str = ""
) -> subprocess.Popen[bytes]:
    """The fake server of ``user`` on ``name``, default ``w.sock`` in ``directory``."""
    argv = [SYSTEM_PYTHON, str(readable_copy(FAKE)), name or str(directory / "w.sock"), *mode]
    fake = user.popen(argv, stdout=subprocess.PIPE)
    assert fake.stdout is not None and fake.stdout.readline() == b"ready\n"
    return fake


def refusal_of(pid: int, budget: float = DEADLINE) -> tuple[Refusal, float]:
    started = time.monotonic()
    answer = capture_worker_server(pid, budget)
    assert isinstance(answer, Refusal), answer
    return answer, time.monotonic() - started


@pytest.fixture
def fakes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for fake in started:
        fake.kill()
        fake.wait()
        if fake.stdout is not None:
            fake.stdout.close()


@needs_torch
def test_a_socket_path_swapped_for_another_users_server_is_refused(
    victim: tuple[TorchWorker, Path],
    second_user: SecondUser,
    hostile_dir: Path,
    fakes: list[subprocess.Popen[bytes]],
) -> None:
    """The hostile worker's own listening socket is shown at its path, which now leads
    to the victim's live server: the peer credentials name the victim, not it."""
    worker, path = victim
    fakes.append(hostile := start_fake(second_user, hostile_dir, "swap-to", str(path)))
    assert os.readlink(hostile_dir / "w.sock") == str(path)
    answer, _ = refusal_of(hostile.pid, BUDGET)
    assert answer.why is Why.NOT_ITS_OWN and f"pid {worker.pid}" in answer.detail, answer
    assert isinstance(capture_worker_server(worker.pid, 2.0), WorkerServerCapture)


@needs_torch
def test_a_connection_to_another_users_server_is_not_a_server(
    victim: tuple[TorchWorker, Path], second_user: SecondUser, fakes: list[subprocess.Popen[bytes]]
) -> None:
    _, path = victim
    holder = (
        f"import socket, time; s = socket.socket(socket.AF_UNIX); s.connect({str(path)!r}); "
        "print('ready', flush=True); time.sleep(600)"
    )
    hostile = second_user.popen([SYSTEM_PYTHON, "-c", holder], stdout=subprocess.PIPE)
    fakes.append(hostile)
    assert hostile.stdout is not None and hostile.stdout.readline() == b"ready\n"
    answer = find_worker_server(hostile.pid, time.monotonic() + BUDGET)
    assert isinstance(answer, Refusal) and answer.why is Why.NO_SERVER, answer


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("silent", Why.TIMEOUT),
        ("drip", Why.TIMEOUT),
        ("huge", Why.TOO_LARGE),
        ("endless-head", Why.TOO_LARGE),
        ("not-http", Why.GARBAGE),
        ("not-a-traceback", Why.GARBAGE),
    ],
)
def test_a_misbehaving_server_is_refused_within_the_deadline(
    mode: str,
    why: Why,
    second_user: SecondUser,
    hostile_dir: Path,
    fakes: list[subprocess.Popen[bytes]],
) -> None:
    fakes.append(hostile := start_fake(second_user, hostile_dir, mode))
    budget = DEADLINE if why is Why.TIMEOUT else BUDGET
    answer, took = refusal_of(hostile.pid, budget)
    assert answer.why is why, answer
    assert took < budget + SLACK


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_a_flight_recorder_that_is_not_json_is_refused_beside_the_stack(
    abstract: bool,
    second_user: SecondUser,
    hostile_dir: Path,
    fakes: list[subprocess.Popen[bytes]],
) -> None:
    name = f"@timer-test-{os.getpid()}-{time.monotonic_ns()}" if abstract else ""
    fakes.append(hostile := start_fake(second_user, hostile_dir, "bad-json", name=name))
    capture = capture_worker_server(hostile.pid, BUDGET)
    assert isinstance(capture, WorkerServerCapture), capture
    if abstract:
        assert capture.endpoint.address == b"\0" + name[1:].encode()
    assert "line 3 in step" in capture.traceback
    assert isinstance(capture.flight_recorder, Refusal)
    assert capture.flight_recorder.why is Why.GARBAGE


def test_a_socket_path_whose_lookup_never_ends_costs_the_deadline(
    second_user: SecondUser, hostile_dir: Path, fakes: list[subprocess.Popen[bytes]]
) -> None:
    """The worker's server is found, then the directory of its socket stops answering
    (a FUSE filesystem mounted over it): connecting sleeps in the kernel, in a thread
    the capture leaves behind at its deadline; the thread ends with the filesystem."""
    fakes.append(hostile := start_fake(second_user, hostile_dir, "bad-json"))
    endpoint = find_worker_server(hostile.pid, time.monotonic() + BUDGET)
    assert isinstance(endpoint, Endpoint), endpoint
    with never_answering_fuse(hostile_dir):
        started = time.monotonic()
        answer = fetch(endpoint, "dump_traceback", 1 << 20, started + DEADLINE)
        assert isinstance(answer, Refusal) and answer.why is Why.TIMEOUT, answer
        assert time.monotonic() - started < DEADLINE + SLACK
        refused, took = refusal_of(hostile.pid)
        assert refused.why is Why.TIMEOUT, refused
        assert took < DEADLINE + SLACK
        assert stuck_connects() == 2
    assert wait_until(lambda: stuck_connects() == 0, 5.0)


def stuck_connects() -> int:
    return sum(thread.name == "worker-server-connect" for thread in threading.enumerate())
