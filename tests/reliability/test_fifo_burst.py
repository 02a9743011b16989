"""A burst of torch-format requests on the FIFO, larger than the recorder's buffer, then
``kill -9`` and a restart, against the real ``timer-service``: the reader pauses while
the recorder is behind instead of dropping events, and every timer committed before the
crash is re-armed. CI runs 20,000 lines through a 1,000-event buffer; the full run is

    TIMER_SERVICE_BURST_LINES=200000 python -m pytest tests/reliability/test_fifo_burst.py -s
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess
from tests.sample_events import torch_line
from tests.waiting import wait_until
from tests.workers import spawn_sleeper

LINES = int(os.environ.get("TIMER_SERVICE_BURST_LINES", "20000"))
BUFFER = int(os.environ.get("TIMER_SERVICE_BURST_BUFFER", "1000"))
# Beyond the limit, the reader may finish the one read it started (64 KiB of lines).
READ_CHUNK = 65536

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120 + LINES // 500)]


def burst(pids: list[int]) -> bytes:
    deadline = time.time() + 3600
    return b"".join(torch_line(pids[n % len(pids)], f"burst-{n}", deadline) for n in range(LINES))


class Writer(threading.Thread):
    """Writes the whole burst into the FIFO, blocking while the pipe is full, as a
    client that waits for room does."""

    def __init__(self, path: str, data: bytes) -> None:
        super().__init__(daemon=True)
        self.path, self.data = path, data
        self.written = 0
        self.seconds = 0.0
        self.broken = False

    def run(self) -> None:
        started = time.monotonic()
        fd = os.open(self.path, os.O_WRONLY)
        try:
            view = memoryview(self.data)
            while self.written < len(view):
                self.written += os.write(fd, view[self.written : self.written + 4096])
        except BrokenPipeError:
            self.broken = True  # the reader was killed
        finally:
            os.close(fd)
            self.seconds = time.monotonic() - started


def count_committed(service: ServiceProcess, query: str) -> int:
    """``query``'s count in the SQLite file itself: what is committed."""
    path = service.workdir / "service.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return int(db.execute(query).fetchone()[0])


def active_rows(service: ServiceProcess) -> int:
    return count_committed(service, "SELECT count(*) FROM timers WHERE state = 'active'")


def acquired_events(service: ServiceProcess) -> int:
    query = "SELECT count(*) FROM events WHERE kind = 'acquired' AND timer_id IS NOT NULL"
    return count_committed(service, query)


def active_over_http(url: str) -> int:
    count, cursor = 0, None
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            params: dict[str, Any] = {"state": "active", "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/timers", params=params).json()
            count += len(page["items"])
            cursor = page["next"]
            if cursor is None:
                return count


def health(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url + "/healthz", timeout=10).json()
    return body


@contextmanager
def bursting(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> Iterator[tuple[ServiceProcess, Writer]]:
    """The service, and a writer started on its FIFO with a burst for four sleeping
    workers; the service is stopped afterwards."""
    workers = [spawn_sleeper() for _ in range(4)]
    sleepers.extend(workers)
    data = burst([worker.pid for worker in workers])
    fifo = str(tmp_path / "timers.fifo")
    service = ServiceProcess(
        tmp_path,
        "--fifo",
        fifo,
        "--log-level",
        "warning",
        "--no-capture-stacks",
        env={"TIMER_SERVICE_RECORDER_BUFFER": str(BUFFER)},
    ).start()
    try:
        writer = Writer(fifo, data)
        writer.start()
        yield service, writer
    finally:
        service.stop()


def check_rearmed(service: ServiceProcess, committed: int) -> float:
    """Restart; exactly the committed timers are armed again. Returns how long the
    service took to answer after the restart."""
    started = time.monotonic()
    service.start()
    seconds = time.monotonic() - started
    report = health(service.url)
    assert report["status"] == "ok", report
    assert report["active_timers"] == committed
    assert report["recorder"]["dropped"] == 0
    assert active_over_http(service.url) == committed
    assert active_rows(service) == committed
    return seconds


def test_a_burst_beyond_the_buffer_pauses_the_reader_and_loses_nothing_across_a_crash(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    with bursting(tmp_path, sleepers) as (service, writer):
        data = writer.data
        most_behind = 0
        while writer.is_alive():
            most_behind = max(most_behind, health(service.url)["recorder"]["behind"])
            time.sleep(0.02)
        assert writer.written == len(data) and not writer.broken
        # Every line written is read, applied and committed: none was dropped.
        assert wait_until(lambda: active_rows(service) == LINES, timeout=60 + LINES / 2000)
        report = health(service.url)
        assert report["status"] == "ok", report
        assert report["recorder"]["dropped"] == 0
        assert report["active_timers"] == LINES
        # The reader really paused, and memory stayed near the bound meanwhile.
        assert report["recorder"]["pauses"] > 0
        assert most_behind <= BUFFER + READ_CHUNK // (len(data) // LINES) + 1, most_behind
        committed = active_rows(service)
        assert acquired_events(service) == committed

        service.crash()
        assert active_rows(service) == committed == LINES
        restart_seconds = check_rearmed(service, committed)
        print(  # shown with -s
            f"\n{LINES} lines through a {BUFFER}-event buffer: written in {writer.seconds:.1f}s, "
            f"{report['recorder']['pauses']} pauses, at most {most_behind} events behind; "
            f"after kill -9, {committed} timers re-armed "
            f"(the restarted service answered in {restart_seconds:.1f}s)"
        )


def test_a_crash_in_the_middle_of_a_burst_rearms_every_committed_timer(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    with bursting(tmp_path, sleepers) as (service, writer):
        assert wait_until(lambda: active_rows(service) >= LINES // 4, timeout=60)
        service.crash()
        writer.join(10)
        committed = active_rows(service)
        assert 0 < committed < LINES
        # Each committed timer came with its acquisition event, in the same commit.
        assert acquired_events(service) == committed
        check_rearmed(service, committed)
