"""``HttpTimerClient`` when the service's answer is not a plain 201 (contract 14): a 202
is done, a connection closed before any answer is tried once more.

The server here is a real socket server that answers as scripted: the real service
cannot be made to close a connection before answering at a chosen request. The
restart test uses the real service."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import timer_core as timer
from tests.app.service_process import ServiceProcess
from tests.waiting import wait_until

ANSWER_202 = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 61\r\n\r\n"
    b'{"timer": {"id": 1}, "recorded": false, "detail": "db away."}'
)
ANSWER_201 = (
    b'HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{"id": 1}'
)


class ScriptedServer:
    """Answers the n-th connection's first request with ``answers[n]`` (None: closes it
    without a word; a number: keeps it that many seconds unanswered, then closes it),
    and counts the requests it read."""

    def __init__(self, answers: list[bytes | float | None]) -> None:
        self.answers = answers
        self.requests = 0
        self.bodies: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for answer in self.answers:
            connection, _ = self.sock.accept()
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += connection.recv(65536)
                self.requests += 1
                self.bodies.append(body)
                if isinstance(answer, float):
                    time.sleep(answer)
                elif answer is not None:
                    connection.sendall(answer)


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.sock.close()


def test_a_connection_closed_before_an_answer_is_retried_once(
    scripted: list[ScriptedServer],
) -> None:
    server = ScriptedServer([None, ANSWER_201])
    scripted.append(server)
    client = timer.HttpTimerClient(server.url)
    client.acquire("step", 2e9)
    assert server.requests == 2
    client.close()


def test_twice_closed_is_an_error_that_says_so(scripted: list[ScriptedServer]) -> None:
    server = ScriptedServer([None, None])
    scripted.append(server)
    client = timer.HttpTimerClient(server.url)
    with pytest.raises(timer.TimerServiceError, match="unreachable"):
        client.acquire("step", 2e9)
    assert server.requests == 2  # once more, not forever
    client.close()


def test_an_answer_that_does_not_come_in_time_is_not_sent_again(
    scripted: list[ScriptedServer],
) -> None:
    """A request that timed out may have been applied: the client says so and does not
    send it again (only a connection closed before any answer is retried)."""
    server = ScriptedServer([1.0, ANSWER_201])
    scripted.append(server)
    client = timer.HttpTimerClient(server.url, timeout=0.3)
    with pytest.raises(timer.TimerServiceError, match="timed out"):
        client.acquire("step", 2e9)
    client.close()
    # A second request would be read once the first connection is let go, after 1 s.
    assert not wait_until(lambda: server.requests > 1, timeout=2.0)
    assert server.requests == 1


def test_a_202_is_done_with_a_warning_and_counted(
    scripted: list[ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = ScriptedServer([ANSWER_202])
    scripted.append(server)
    client = timer.HttpTimerClient(server.url)
    with caplog.at_level(logging.WARNING, logger="timer_core.http_client"):
        client.acquire("step", 2e9)
    assert client.not_recorded == 1
    assert any("could not record it yet" in r.getMessage() for r in caplog.records)
    client.close()


# A worker that arms through one client for every line it reads, and says how it went.
ARMING_WORKER = textwrap.dedent(
    """
    import sys, time
    import timer_core as timer
    client = timer.HttpTimerClient(sys.argv[1], signal=0)
    for line in sys.stdin:
        time.sleep(float(line))
        try:
            client.acquire("step", time.time() + 600)
            print("ok", flush=True)
        except Exception as error:
            print("error", error, flush=True)
    """
)


def test_one_client_arms_across_a_service_restart(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path).start()
    worker = subprocess.Popen(
        [sys.executable, "-c", ARMING_WORKER, service.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None and worker.stdout is not None

    def arm(after: float) -> str:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(f"{after}\n")
        worker.stdin.flush()
        return worker.stdout.readline().strip()

    try:
        assert arm(0) == "ok"
        # Idle for exactly the service's keep-alive (5 s): the race the soak found.
        assert arm(5.0) == "ok"
        service.stop()
        service.start()  # the same port, a new process
        assert arm(0) == "ok"
        assert arm(0.1) == "ok"
    finally:
        worker.kill()
        worker.communicate()  # reaped, and its pipes closed
        service.stop()


def test_torchruns_restart_count_is_left_to_the_service(
    scripted: list[ScriptedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchrun sets TORCHELASTIC_RESTART_COUNT for every worker; a service older than
    # the label answers 422 to a body naming it, and a newer one reads it from the
    # worker's environment. The other labels go as before.
    for name, value in {
        "TORCHELASTIC_RUN_ID": "job-7",
        "RANK": "1",
        "WORLD_SIZE": "2",
        "TORCHELASTIC_RESTART_COUNT": "3",
    }.items():
        monkeypatch.setenv(name, value)
    scripted.append(server := ScriptedServer([ANSWER_201, ANSWER_201]))
    client = timer.HttpTimerClient(server.url)
    given = timer.HttpTimerClient(server.url, labels=timer.engine.Labels(restart_count=4))
    try:
        client.acquire("s", time.time() + 60)
        given.acquire("s", time.time() + 60)
    finally:
        client.close()
        given.close()
    from_environment, explicit = (json.loads(body) for body in server.bodies)
    assert from_environment["job_id"] == "job-7" and from_environment["rank"] == 1
    assert "restart_count" not in from_environment
    assert explicit["restart_count"] == 4
