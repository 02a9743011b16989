"""The stack capture asks the worker's own torch worker server first: a real torch
worker gives its stack and flight recorder that way; a server that answers garbage,
never answers, or a worker with none, leaves the capture to py-spy (or /proc) as
before, and a stopped worker's server is not asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.timer_core.diagnosis.torch_worker_server import TorchWorker, needs_torch, torch_worker
from tests.waiting import wait_until
from tests.workers import needs_py_spy
from timer_core import ProcessIdentity, identify
from timer_core.diagnosis import load_flight_recorder, parse_stack
from timer_core.diagnosis.stack_capture import StackCapturer

FAKE = Path(__file__).with_name("fake_worker_server.py")
STACKS = Path(__file__).with_name("stacks")
BUDGET = 5.0


def identity_of(pid: int) -> ProcessIdentity:
    found = identify(pid)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchWorker]:
    with torch_worker(str(tmp_path_factory.mktemp("server") / "worker.sock")) as started:
        yield started


@pytest.fixture
def fake(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[bytes]]:
    """This user's fake worker server, in the mode the test's parameter names."""
    argv = [sys.executable, str(FAKE), str(tmp_path / "w.sock"), request.param]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        yield server
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_the_main_thread_of_a_worker_servers_traceback_is_its_last() -> None:
    """The server answers from a thread of its own, with no Python frame ("Current
    thread"): the frames read are the main thread's, listed last (a real answer of a
    torch 2.13 worker with a loader thread)."""
    frames = parse_stack((STACKS / "worker-server-traceback.txt").read_text())
    assert [f.function for f in frames.python] == ["step", "main", "<module>"]


@needs_torch
def test_a_torch_worker_gives_its_stack_and_flight_recorder_over_its_server(
    worker: TorchWorker,
) -> None:
    captured = StackCapturer(budget=BUDGET).capture(identity_of(worker.pid))
    assert captured.method == "worker-server", captured.notes
    assert captured.notes == ()
    assert parse_stack(captured.text).python[0].function == "stuck_in_a_step"
    assert captured.flight_recorder is not None
    recorder = load_flight_recorder(0, captured.flight_recorder)
    group = recorder.group("0")
    assert group is not None and group.last_enqueued == 1
    assert [(e.seq, e.op, e.sizes) for e in group.entries] == [(1, "all_reduce", ((8,),))]


@needs_torch
def test_without_the_worker_server_the_capture_is_as_before(worker: TorchWorker) -> None:
    captured = StackCapturer(budget=BUDGET, use_py_spy=False, use_worker_server=False).capture(
        identity_of(worker.pid)
    )
    assert captured.method == "proc"
    assert captured.flight_recorder is None
    assert captured.notes == ("py-spy: not installed or disabled",)


@pytest.mark.parametrize("fake", ["not-a-traceback"], indirect=True)
@needs_py_spy
def test_a_server_that_answers_garbage_gives_no_evidence_and_py_spy_runs(
    fake: subprocess.Popen[bytes],
) -> None:
    captured = StackCapturer(budget=BUDGET).capture(identity_of(fake.pid))
    assert captured.method.startswith("py-spy"), captured.notes
    assert "totally a stack" not in captured.text
    assert "fake_worker_server.py" in captured.text  # py-spy's, of the fake's own frames
    assert captured.flight_recorder is None
    assert captured.notes[0].startswith("worker-server: garbage: dump_traceback: not a"), (
        captured.notes
    )


@pytest.mark.parametrize("fake", ["silent"], indirect=True)
@needs_py_spy
def test_a_server_that_never_answers_costs_its_share_and_py_spy_runs(
    fake: subprocess.Popen[bytes],
) -> None:
    captured = StackCapturer(budget=BUDGET).capture(identity_of(fake.pid))
    assert captured.method.startswith("py-spy"), captured.notes
    assert captured.notes[0] == "worker-server: timeout: ping: no answer within the deadline"


@pytest.mark.parametrize("fake", ["bad-json"], indirect=True)
def test_a_flight_recorder_that_is_not_json_is_a_note_beside_the_stack(
    fake: subprocess.Popen[bytes],
) -> None:
    captured = StackCapturer(budget=BUDGET, use_py_spy=False).capture(identity_of(fake.pid))
    assert captured.method == "worker-server"
    assert parse_stack(captured.text).python[0].function == "step"
    assert captured.flight_recorder is None
    (note,) = captured.notes
    assert note.startswith("flight recorder: garbage: fr_trace_json: not JSON"), note


@pytest.mark.parametrize("fake", ["bad-json"], indirect=True)
def test_a_stopped_workers_server_is_not_asked(fake: subprocess.Popen[bytes]) -> None:
    """Its server thread is stopped too: asking would cost the ping's time for nothing."""
    os.kill(fake.pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: "T (stopped)" in Path(f"/proc/{fake.pid}/status").read_text())
        captured = StackCapturer(budget=BUDGET, use_py_spy=False).capture(identity_of(fake.pid))
    finally:
        os.kill(fake.pid, signal.SIGCONT)
    assert captured.method == "proc"
    # Asked, a stopped server would have left a note (its ping times out).
    assert captured.notes == ("py-spy: not installed or disabled",)


def test_a_rank_reads_alike_over_its_server_and_through_py_spy() -> None:
    """One rank waiting in all_reduce, its stack taken both ways (torch 2.13): py-spy
    names ``_exception_logger.<locals>.wrapper``, faulthandler ``wrapper``. An incident
    whose ranks were taken either way groups them together."""
    server = parse_stack((STACKS / "worker-server-allreduce.txt").read_text())
    py_spy = parse_stack((STACKS / "py-spy-allreduce-same-rank.txt").read_text())
    assert [f.function for f in server.python] == ["all_reduce", "wrapper", "<module>"]
    assert py_spy.python[1].function == "_exception_logger.<locals>.wrapper"
    assert server.signature() == py_spy.signature()
