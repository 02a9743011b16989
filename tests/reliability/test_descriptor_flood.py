"""File descriptor attacks against the real ``timer-service`` process: an idle
connection flood under a low open file limit, a silent connection and a slowloris.
The kill must still happen, and the service must say it is under pressure."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.service_process import ServiceProcess, scraped
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

needs_prlimit = pytest.mark.skipif(
    shutil.which("prlimit") is None, reason="needs util-linux prlimit"
)


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes the connection (EOF or reset); False if it stays
    open for 30 s."""
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


@pytest.fixture
def flood_target(tmp_path: Path) -> Iterator[ServiceProcess]:
    # A long request timeout: the flood stays held, so the connection gate is what is
    # tested here, not the timeout.
    service = ServiceProcess(
        tmp_path, "--request-timeout", "120", prefix=("prlimit", "--nofile=256")
    ).start()
    yield service
    service.stop()


@needs_prlimit
def test_an_idle_connection_flood_under_256_descriptors_does_not_stop_a_kill(
    flood_target: ServiceProcess,
) -> None:
    service = flood_target
    flood: list[socket.socket] = []
    worker = spawn_sleeper()
    try:
        # 400 connections that never send a byte, all kept open by the test.
        for _ in range(400):
            flood.append(socket.create_connection(("127.0.0.1", service.port)))
        # A real client still gets in, over a fresh connection, and arms a timer.
        response = httpx.post(
            service.url + "/timers",
            json={"pid": worker.pid, "scope_id": "under-flood", "expires_in": 1},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        timer_id = response.json()["id"]
        assert_sigkilled(worker)
        assert wait_until(
            lambda: httpx.get(f"{service.url}/timers/{timer_id}").json()["state"] == "killed",
            30,
        )
        health = httpx.get(service.url + "/healthz").json()
        assert health["status"] == "degraded"
        assert any("HTTP connections at their limit" in p for p in health["problems"])
        descriptors = health["descriptors"]
        assert descriptors["limit"] == 256
        assert descriptors["open"] <= 256 - descriptors["reserved_for_kills"] + 8
        assert scraped(service.url, "timer_fd_limit") == 256
        evicted = scraped(service.url, "timer_http_connections_shed_total", reason="evicted")
        assert evicted is not None and evicted > 0
        # Idle connections were closed to make room: the flood's oldest see EOF.
        assert closed_by_server(flood[0])
        assert "Too many open files" not in service.log()
    finally:
        for sock in flood:
            sock.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait()


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess(tmp_path, "--request-timeout", "2").start()
    yield service
    service.stop()


def test_a_silent_connection_and_a_slowloris_are_closed(impatient: ServiceProcess) -> None:
    service = impatient
    address = ("127.0.0.1", service.port)
    stop = threading.Event()

    def trickle(sock: socket.socket, text: bytes) -> None:
        # One byte every 0.2 s: the head never completes before the timeout.
        with contextlib.suppress(OSError):
            for byte in text:
                if stop.wait(0.2):
                    return
                sock.send(bytes([byte]))

    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 500
    with (
        socket.create_connection(address) as silent,
        socket.create_connection(address) as slowloris,
        socket.create_connection(address) as after_a_request,
    ):
        # The third sends one whole request, gets its answer, then trickles the next.
        after_a_request.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert after_a_request.recv(4096).startswith(b"HTTP/1.1 200")
        trickles = [
            threading.Thread(target=trickle, args=(sock, head))
            for sock in (slowloris, after_a_request)
        ]
        for thread in trickles:
            thread.start()
        try:
            assert closed_by_server(silent)
            assert closed_by_server(slowloris)
            assert closed_by_server(after_a_request)
        finally:
            stop.set()
            for thread in trickles:
                thread.join(30)
    timed_out = scraped(service.url, "timer_http_connections_shed_total", reason="timed_out")
    assert timed_out is not None and timed_out >= 3
    # A slow client alone is no sign of pressure, and a prompt one is served.
    assert httpx.get(service.url + "/healthz").json()["status"] == "ok"
