"""Clients that do not take training down with them (issue 25 item 6): a worker whose
client was made with ``fail_open=True`` keeps stepping while its server is away, says so
once on stderr, counts, and arms again when the server is back; with the default it
dies as before. Real worker processes, a real ``timer-service`` SIGKILLed mid-run, real
FIFOs with no reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import timer_core as timer
from tests.app.service_process import ServiceProcess, free_port, wait_for_state
from tests.timer_core.test_http_client_faults import ScriptedServer
from timer_core.engine import Labels
from timer_core.fail_open import MAX_KEPT_RELEASES, ServerUnreachable
from timer_core.http_client import TimerServiceUnreachable

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "unreachable"
BACK = "reachable again"


class Worker:
    """``fail_open_worker.py`` in a process of its own, driven line by line."""

    def __init__(self, kind: str, target: str, mode: str) -> None:
        # -m from this checkout's root: this checkout's timer_core, from any clone.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.timer_core.fail_open_worker", kind, target, mode],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def do(self, command: str) -> dict[str, int]:
        """Run one command; its counters after it (an AssertionError if it died)."""
        assert self.process.stdout is not None
        self.send(command)
        answer = self.process.stdout.readline()
        assert answer, f"the worker died at {command!r}: {self.finish()[1]}"
        counters: dict[str, int] = json.loads(answer)
        return counters

    def finish(self) -> tuple[int, str]:
        """Close its stdin (it exits when it has read everything): its exit status and
        stderr."""
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One real service for the module (a test that SIGKILLs it starts it again)."""
    started = ServiceProcess(tmp_path_factory.mktemp("service")).start()
    yield started
    started.stop()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def nothing_listening() -> str:
    return f"http://127.0.0.1:{free_port()}"


def lines_with(text: str, stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if text in line]


def timers_of(url: str, pid: int) -> dict[str, str]:
    """Each scope of ``pid`` on the service, with the state of its newest timer."""
    items: list[dict[str, Any]] = httpx.get(f"{url}/timers", params={"pid": pid}).json()["items"]
    states: dict[str, str] = {}
    for item in items:  # newest first
        states.setdefault(item["scope_id"], item["state"])
    return states


# HTTP


def test_a_fail_open_worker_steps_on_with_nothing_listening(workers: list[Worker]) -> None:
    worker = Worker("http", nothing_listening(), "open")
    workers.append(worker)
    assert worker.do("steps 5") == {"failed_requests": 10, "outages": 1}
    assert worker.do("steps 5") == {"failed_requests": 20, "outages": 1}
    status, stderr = worker.finish()
    assert status == 0, stderr
    # One line for the whole outage, not one per request; it names the way out.
    said = lines_with(UNREACHABLE, stderr)
    assert len(said) == 1, stderr
    assert "fail_open" in said[0] and "not killed" in said[0]
    assert "Traceback" not in stderr


def test_a_fail_closed_worker_dies_at_its_first_step_as_before(workers: list[Worker]) -> None:
    url = nothing_listening()
    worker = Worker("http", url, "closed")
    workers.append(worker)
    worker.send("steps 5")
    status, stderr = worker.finish()
    assert status != 0
    assert "TimerServiceUnreachable" in stderr and f"{url} is unreachable" in stderr


def test_a_service_sigkilled_mid_run_then_back(
    service: ServiceProcess, workers: list[Worker]
) -> None:
    try:
        worker = Worker("http", service.url, "open")
        workers.append(worker)
        assert worker.do("enter held") == {"failed_requests": 0, "outages": 0}
        assert timers_of(service.url, worker.pid) == {"held": "active"}

        service.crash()  # SIGKILL, while the worker is inside "held"
        assert worker.do("leave held") == {"failed_requests": 1, "outages": 1}
        assert worker.do("steps 3") == {"failed_requests": 7, "outages": 1}

        service.start()  # the same port and database: it re-arms "held", still active
        assert timers_of(service.url, worker.pid)["held"] == "active"
        # The next request reaches it and arms; the release it could not send goes too,
        # so the timer re-armed from the database does not outlive the block it guarded.
        assert worker.do("enter next") == {"failed_requests": 7, "outages": 1}
        assert timers_of(service.url, worker.pid) == {"next": "active", "held": "released"}
        assert worker.do("leave next") == {"failed_requests": 7, "outages": 1}
        wait_for_state(service.url, worker.pid, "released")

        status, stderr = worker.finish()
        assert status == 0, stderr
        assert len(lines_with(UNREACHABLE, stderr)) == 1, stderr
        back = lines_with(BACK, stderr)
        assert len(back) == 1, stderr
        # "step" too: the steps' releases failed as "held"'s did.
        assert "7 requests failed open" in back[0] and "sending 2 releases" in back[0]
    finally:
        if service.process is not None and service.process.poll() is not None:
            service.start()  # for the rest of the module, had the test failed while down


def test_a_refusal_that_is_the_callers_fault_raises_even_fail_open(
    service: ServiceProcess,
) -> None:
    # rank 5 of a world of 2: the real service answers 422, and arms nothing.
    client = timer.HttpTimerClient(
        service.url, signal=0, labels=Labels(rank=5, world_size=2), fail_open=True
    )
    try:
        with pytest.raises(timer.TimerServiceError, match="refused /timers with 422") as raised:
            client.acquire("bad", time.time() + 60)
        assert not isinstance(raised.value, TimerServiceUnreachable)
        assert client.failed_requests == 0 and client.outages == 0
        assert timers_of(service.url, os.getpid()) == {}
    finally:
        client.close()


def test_a_5xx_fails_open_and_the_next_answer_ends_the_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The real service answers writes 201, 200 or 202 (contract 14); a proxy before it
    # may answer 502: a scripted server stands in for that proxy.
    created = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"
    bad_gateway = b'HTTP/1.1 502 Bad Gateway\r\ncontent-length: 19\r\n\r\n{"detail": "proxy"}'
    server = ScriptedServer([bad_gateway, bad_gateway, created, created])
    client = timer.HttpTimerClient(server.url, fail_open=True)
    try:
        with caplog.at_level("WARNING", logger="timer_core.http_client"):
            client.acquire("s", time.time() + 60)
            client.acquire("s", time.time() + 60)
            assert (client.failed_requests, client.outages) == (2, 1)
            client.acquire("s", time.time() + 60)
            client.release("s")
        assert server.requests == 4
        messages = [record.getMessage() for record in caplog.records]
        assert len(messages) == 2, messages
        assert "failed /timers with 502: proxy" in messages[0]
        assert BACK in messages[1]
    finally:
        client.close()
        server.sock.close()


# FIFO


def test_a_fail_open_worker_steps_on_with_no_reader_then_arms_again(
    tmp_path: Path, workers: list[Worker]
) -> None:
    fifo = tmp_path / "timers.fifo"
    os.mkfifo(fifo, 0o600)  # there, and nobody reads it: ENXIO at each open
    worker = Worker("fifo", str(fifo), "open")
    workers.append(worker)
    assert worker.do("steps 3") == {"failed_requests": 6, "outages": 1}
    assert worker.do("leave held") == {"failed_requests": 7, "outages": 1}

    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a server is back
    try:
        assert worker.do("enter next") == {"failed_requests": 7, "outages": 1}
        lines = [json.loads(line) for line in os.read(reader, 1 << 16).decode().splitlines()]
    finally:
        os.close(reader)
    # The arm that reached it, then the releases kept from the outage (harmless
    # where the arm had not reached it either: a release of no timer is nothing).
    assert [(line["scope_id"], line["expiration_time"] > 0) for line in lines] == [
        ("next", True),
        ("held", False),
        ("step", False),  # the steps' releases failed as "held"'s did
    ]
    assert {line["pid"] for line in lines} == {worker.pid}

    # The reader is gone again: a second outage, told once more.
    assert worker.do("steps 1") == {"failed_requests": 9, "outages": 2}
    status, stderr = worker.finish()
    assert status == 0, stderr
    assert len(lines_with("no FileTimerServer is reading", stderr)) == 2, stderr
    assert len(lines_with(BACK, stderr)) == 1, stderr


def test_a_fail_closed_fifo_worker_dies_as_torchs_does(
    tmp_path: Path, workers: list[Worker]
) -> None:
    fifo = tmp_path / "timers.fifo"
    os.mkfifo(fifo, 0o600)
    worker = Worker("fifo", str(fifo), "closed")
    workers.append(worker)
    worker.send("steps 3")
    status, stderr = worker.finish()
    assert status != 0
    assert "TimerFifoUnreachable" in stderr and "no FileTimerServer is reading" in stderr


def test_a_fifo_that_stays_full_fails_open(tmp_path: Path) -> None:
    fifo = tmp_path / "stuck.fifo"
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a server that stopped reading
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        try:
            while True:
                os.write(filler, b"x" * 4096)
        except BlockingIOError:
            pass
        client = timer.FileTimerClient(str(fifo), fail_open=True)
        with timer.expires(after=60, scope="s", client=client):
            pass
        assert (client.failed_requests, client.outages) == (2, 1)
    finally:
        os.close(filler)
        os.close(reader)


def test_a_path_that_is_no_fifo_raises_even_fail_open(tmp_path: Path) -> None:
    # The path's fault, not an outage: failing open would run the whole job unwatched.
    (tmp_path / "file").write_text("")
    client = timer.FileTimerClient(str(tmp_path / "file" / "timers.fifo"), fail_open=True)
    with pytest.raises(BrokenPipeError, match="check the path") as raised:
        client.acquire("s", time.time() + 60)
    assert not isinstance(raised.value, ServerUnreachable)
    assert client.failed_requests == 0


def test_the_default_is_torchs_fail_closed() -> None:
    assert not timer.HttpTimerClient(nothing_listening()).fail_open
    assert not timer.FileTimerClient("/nonexistent/timers.fifo").fail_open


def test_a_regular_file_at_the_fifo_path_raises_in_both_modes(tmp_path: Path) -> None:
    # It opens, and would take the lines (torch's client writes into it): the whole job
    # would run unwatched, fail closed as well as open, and nothing would say so.
    path = tmp_path / "timers.fifo"
    path.write_text("")
    for fail_open in (False, True):
        client = timer.FileTimerClient(str(path), fail_open=fail_open)
        with pytest.raises(BrokenPipeError, match=r"is no FIFO.*check the path") as raised:
            client.acquire("s", time.time() + 60)
        assert not isinstance(raised.value, ServerUnreachable)
        assert client.failed_requests == 0
    assert path.read_text() == ""


@pytest.mark.parametrize("status", [b"401 Unauthorized", b"403 Forbidden"])
def test_a_401_or_403_raises_even_fail_open(status: bytes) -> None:
    # A token or a uid the service turns away: no timer will ever be armed, which
    # failing open would hide for the whole run. A scripted server answers: the real
    # service answers a root caller (the test's) neither.
    refused = b"HTTP/1.1 " + status + b'\r\ncontent-length: 15\r\n\r\n{"detail": "no"}'
    server = ScriptedServer([refused])
    client = timer.HttpTimerClient(server.url, fail_open=True)
    try:
        with pytest.raises(
            timer.TimerServiceError, match=f"refused /timers with {status[:3].decode()}"
        ) as raised:
            client.acquire("s", time.time() + 60)
        assert not isinstance(raised.value, TimerServiceUnreachable)
        assert (client.failed_requests, client.outages) == (0, 0)
    finally:
        client.close()
        server.sock.close()


def test_many_threads_failing_open_count_every_request_and_one_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = timer.HttpTimerClient(nothing_listening(), fail_open=True)

    def steps() -> None:
        for _ in range(20):
            with timer.expires(after=60, scope=f"thread-{threading.get_ident()}", client=client):
                pass

    try:
        with caplog.at_level("WARNING", logger="timer_core.http_client"):
            threads = [threading.Thread(target=steps) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert (client.failed_requests, client.outages) == (8 * 20 * 2, 1)
        assert len([r for r in caplog.records if UNREACHABLE in r.getMessage()]) == 1
    finally:
        client.close()


def test_a_long_outage_keeps_a_bounded_number_of_releases(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker whose scope ids change each step, in a long outage: the releases it keeps
    # stay bounded (memory, and what the first answered request sends at once), and
    # the first kept, a timer armed before the outage, is among those sent.
    fifo = tmp_path / "timers.fifo"
    os.mkfifo(fifo, 0o600)  # nobody reads it
    client = timer.FileTimerClient(str(fifo), signal=0, fail_open=True)
    extra = 40
    with caplog.at_level("WARNING", logger="timer_core.file_based_local_timer"):
        client.release("held")  # armed before the outage, say
        for step in range(MAX_KEPT_RELEASES + extra):
            with timer.expires(after=60, scope=f"step-{step}", client=client):
                pass
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a server is back
        try:
            client.acquire("next", time.time() + 60)
            data = b""
            while chunk := os.read(reader, 1 << 16):
                data += chunk
        finally:
            os.close(reader)
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert (lines[0]["scope_id"], lines[0]["expiration_time"] > 0) == ("next", True)
    released = [line["scope_id"] for line in lines[1:]]
    assert all(line["expiration_time"] < 0 for line in lines[1:])
    assert len(released) == len(set(released)) == MAX_KEPT_RELEASES
    assert "held" in released
    [back] = [r.getMessage() for r in caplog.records if BACK in r.getMessage()]
    # 'held' and the first 255 steps kept; the other steps' releases dropped, and said.
    assert f"sending {MAX_KEPT_RELEASES} releases" in back
    assert f"({extra + 1} more, beyond the first {MAX_KEPT_RELEASES} scopes, dropped)" in back
