"""Load generators for the reliability tests: HTTP clients on threads, FIFO writers
as processes; each counts what the service acknowledged."""

from __future__ import annotations

import collections
import fcntl
import os
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

# A FIFO writer: acquire and release its own timer in a loop (a training step a
# millisecond long), counting what it wrote, then wait to be told to exit.
FIFO_WRITER = """
import os, sys, time
import timer_core as timer
client = timer.FileTimerClient(sys.argv[1])
stop_at = time.monotonic() + float(sys.argv[2])
acquired = released = 0
while time.monotonic() < stop_at:
    client.acquire("fifo-step", time.time() + 30)
    acquired += 1
    time.sleep(0.001)
    client.release("fifo-step")
    released += 1
print(acquired, released, flush=True)
sys.stdin.readline()
"""


@dataclass
class HttpTally:
    """What one HTTP client was told."""

    created: list[int] = field(default_factory=list)  # ids acknowledged with 201
    released: int = 0  # releases acknowledged with 200
    # Applied but answered before their commit (202, contract 14: the database was slow
    # to answer): their events must still be written, but a crash may lose them.
    accepted: list[int] = field(default_factory=list)
    accepted_releases: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    transport_errors: int = 0


def http_client_loop(url: str, pid: int, scope: str, stop_at: float, tally: HttpTally) -> None:
    acquire = {"pid": pid, "scope_id": scope, "expires_in": 30}
    release = {"pid": pid, "scope_id": scope}
    with httpx.Client(base_url=url, timeout=10) as http:
        while time.monotonic() < stop_at:
            try:
                response = http.post("/timers", json=acquire)
                tally.statuses[response.status_code] += 1
                if response.status_code == 201:
                    tally.created.append(response.json()["id"])
                elif response.status_code == 202:
                    tally.accepted.append(response.json()["timer"]["id"])
                response = http.post("/timers/release", json=release)
                tally.statuses[response.status_code] += 1
                if response.status_code == 200:
                    tally.released += 1
                elif response.status_code == 202:
                    tally.accepted_releases += 1
            except httpx.TransportError:
                tally.transport_errors += 1  # the service is down (the crash test)
                time.sleep(0.05)


def start_http_clients(
    url: str, pid: int, clients: int, seconds: float
) -> tuple[list[threading.Thread], list[HttpTally]]:
    stop_at = time.monotonic() + seconds
    tallies = [HttpTally() for _ in range(clients)]
    threads = [
        threading.Thread(target=http_client_loop, args=(url, pid, f"http-{i}", stop_at, tallies[i]))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    return threads, tallies


def start_fifo_writers(fifo: str, writers: int, seconds: float) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(FIFO_WRITER), fifo, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]


def finish_fifo_writers(
    writers: list[subprocess.Popen[str]], fifo: str | None = None
) -> dict[int, tuple[int, int]]:
    """Each writer's (acquired, released) counts, by pid; the writers then exit. With
    ``fifo``, not before the service has read every line of the pipe: a line read after
    its writer exited is refused ("no process with pid ..."), rightly, but it is not
    the loss these tests look for."""
    counts = {}
    for writer in writers:
        assert writer.stdout is not None and writer.stdin is not None
        line = writer.stdout.readline().split()
        assert len(line) == 2, f"FIFO writer {writer.pid} failed"
        counts[writer.pid] = (int(line[0]), int(line[1]))
    if fifo is not None:
        wait_fifo_read(fifo)
    for writer in writers:
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.close()
        writer.wait(10)
        writer.stdout.close()
    return counts


def wait_fifo_read(fifo: str, timeout: float = 60.0) -> None:
    """Wait until the pipe behind ``fifo`` holds no unread byte twice in a row, 0.2 s
    apart (the service applies a read's lines as soon as it has read them). FIONREAD
    counts the pipe's bytes without taking any."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        deadline = time.monotonic() + timeout
        empty_rounds = 0
        while empty_rounds < 2:
            assert time.monotonic() < deadline, "the service never read the FIFO's backlog"
            unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
            empty_rounds = empty_rounds + 1 if unread == 0 else 0
            time.sleep(0.2)
    finally:
        os.close(fd)


def all_events(url: str) -> list[dict[str, Any]]:
    """Every event on disk, once the recorder has caught up."""
    deadline = time.monotonic() + 30
    while httpx.get(url + "/healthz").json()["recorder"]["backlog"]:
        assert time.monotonic() < deadline, "the recorder never caught up"
        time.sleep(0.1)
    return all_pages(url, "/events")


def all_pages(url: str, path: str) -> list[dict[str, Any]]:
    """Every item of a paginated listing, 1,000 a request on one connection."""
    items: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = http.get(path, params=params).json()
            items.extend(page["items"])
            cursor = page["next"]
            if cursor is None:
                return items
