"""WAL growth: the SQLite write-ahead log's size under sustained FIFO load, and the disk
the real service writes per event (issue 26).

    python -m bench.wal_growth                       # 60 s, 300 arm+release pairs a second
    python -m bench.wal_growth --smoke               # 10 s of 1,500 pairs a second
    python -m bench.wal_growth --source DIR --label before   # another checkout's service

The real ``timer-service serve --fifo`` on a fresh SQLite database, fed torch JSON
lines (an arm and a release of a fresh timer, ``--rate`` pairs a second) by this
process. Every half second the WAL file's size is sampled. At the end: the largest
WAL, the WAL left, and the service's bytes written (``/proc/PID/io``
``write_bytes``: what reached the block layer, WAL and database file together) per
event recorded, and in 4 KiB pages. ``--source`` runs the service from another
checkout (``git archive COMMIT | tar -x -C DIR``), to measure before and after a change.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.common import REPO, fifo_line, print_table, save, spawn_sleeper, wait_for_reader

PAGE = 4096


def _counter(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _events(url: str) -> float:
    return _counter(url, "timer_acquisitions_total") + _counter(url, "timer_releases_total")


def _feed(fifo: str, pid: int, rate: float, stop: threading.Event) -> None:
    """``rate`` arm+release pairs a second, in 10 ms slices, each timer a fresh one."""
    fd = os.open(fifo, os.O_WRONLY)
    number = 0
    slice_pairs = max(1, round(rate / 100))
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            lines = []
            for _ in range(slice_pairs):
                number += 1
                scope = f"step-{number}"
                lines.append(fifo_line(pid, scope, time.time() + 600))
                lines.append(fifo_line(pid, scope, -1))
            os.write(fd, b"".join(lines))  # a few lines, well under PIPE_BUF
            next_at += slice_pairs / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        os.close(fd)


def measure(source: Path, seconds: float, rate: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="wal-growth-"))
    os.chmod(workdir, 0o700)
    db, fifo = workdir / "service.db", str(workdir / "timers.fifo")
    wal = Path(f"{db}-wal")
    port = 18000 + os.getpid() % 1000
    url = f"http://127.0.0.1:{port}"
    service = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--db-url",
         f"sqlite:///{db}", "--fifo", fifo, "--no-capture-stacks", "--log-level", "warning"],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
    )  # fmt: skip
    worker = spawn_sleeper()
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        wait_for_reader(fifo)
        io = psutil.Process(service.pid)
        written_before, events_before = io.io_counters().write_bytes, _events(url)
        commits_before = _counter(url, "timer_recorder_commits_total")
        feeder = threading.Thread(target=_feed, args=(fifo, worker.pid, rate, stop))
        feeder.start()
        largest, until = 0, time.monotonic() + seconds
        while time.monotonic() < until:
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            time.sleep(0.5)
        stop.set()
        feeder.join()
        time.sleep(2.0)  # the recorder catches up
        events = _events(url) - events_before
        commits = _counter(url, "timer_recorder_commits_total") - commits_before
        written = io.io_counters().write_bytes - written_before
        left = wal.stat().st_size if wal.exists() else 0
    finally:
        stop.set()
        service.terminate()
        service.wait(30)
        worker.kill()
        worker.wait()
    return {
        "seconds": seconds,
        "events": int(events),
        "events_per_second": round(events / seconds),
        "events_per_commit": round(events / max(1, commits), 1),
        "wal_max_mb": round(largest / 1e6, 1),
        "wal_left_mb": round(left / 1e6, 1),
        "written_mb": round(written / 1e6, 1),
        "bytes_per_event": round(written / max(1, events)),
        "pages_per_event": round(written / PAGE / max(1, events), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=300.0, help="arm+release pairs a second")
    parser.add_argument("--source", type=Path, default=REPO, help="the checkout to run")
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    # The smoke run is short but fast: unbounded, its WAL would pass 100 MB.
    seconds, rate = (10.0, 1500.0) if args.smoke else (args.seconds, args.rate)
    result = measure(args.source.resolve(), seconds, rate)
    print_table(
        f"WAL under {rate:g} FIFO pairs/s for {seconds:g} s ({args.label})",
        list(result),
        [list(result.values())],
    )
    name = "wal_growth_smoke" if args.smoke else f"wal_growth_{args.label}"
    save(name, {"label": args.label, "rate": rate, **result})


if __name__ == "__main__":
    main()
