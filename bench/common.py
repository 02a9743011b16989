"""Shared helpers for the benchmarks: server processes, sleepers, stats, output."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from timer_core.engine.arm_request import ArmRequest
from timer_core.wire import encode

if TYPE_CHECKING:  # only the benches of an app's reads pass one; the others need not load it
    from fastapi.testclient import TestClient

Item = TypeVar("Item")
Result = TypeVar("Result")

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).parent.parent

# A FileTimerServer in its own process, ours or torch's, reading `fifo`.
# torch's server SIGKILLs its own process after every reap; without the guard
# below it could not survive to make a second kill. The guard changes no timing.
FILE_SERVER = """
import os, sys, time
impl, fifo, max_interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
if impl == "torch":
    from torch.distributed.elastic.timer import FileTimerServer
    original = FileTimerServer._reap_worker
    def _reap_worker(self, pid, sig):
        return True if pid == os.getpid() else original(self, pid, sig)
    FileTimerServer._reap_worker = _reap_worker
else:
    from timer_core import FileTimerServer
server = FileTimerServer(fifo, "bench", max_interval=max_interval)
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop()
"""


def python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``code`` run by this Python from the repository (so it imports ``bench``), with
    ``args``, lines in and out, and ``env`` added to this environment."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def start_file_server(impl: str, fifo: str, max_interval: float) -> subprocess.Popen[str]:
    process = python(FILE_SERVER, impl, fifo, str(max_interval))
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{impl} FileTimerServer did not start")
    wait_for_reader(fifo)
    return process


def wait_for_reader(fifo: str, timeout: float = 10.0) -> None:
    """torch's server opens the FIFO for reading only once its thread runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"no server ever opened {fifo} for reading")


def stop_server(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(15)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stdin):
        if stream is not None and not stream.closed:
            stream.close()


def spawn_sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(5)"])


def fifo_line(pid: int, scope: str, expiration_time: float, signal: int = 9) -> bytes:
    return encode(ArmRequest(pid, scope, expiration_time, signal))


def write_fifo(fifo: str, data: bytes) -> None:
    """Write whole lines in PIPE_BUF-sized pieces, so no line is split."""
    fd = os.open(fifo, os.O_WRONLY)
    try:
        view, start = memoryview(data), 0
        while start < len(data):
            end = min(len(data), start + 4096)
            end = data.rfind(b"\n", start, end) + 1 or end
            start += os.write(fd, view[start:end])
    finally:
        os.close(fd)


def side_by_side(
    measure: Callable[[Item], Result], items: Iterable[Item], lanes: int
) -> list[Result]:
    """``measure`` of each item, ``lanes`` at a time, in the items' order. A smoke run
    takes 2 lanes: its rows are mostly a process starting or a deadline waited for, and
    its timings are not what it checks. A full run takes 1, so that no row's timings
    include another's."""
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        return list(pool.map(measure, items))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": 1000 * statistics.median(values) if values else float("nan"),
        "p99_ms": 1000 * percentile(values, 99),
        "max_ms": 1000 * max(values) if values else float("nan"),
    }


def median_get_ms(
    client: TestClient, path: str, params: Mapping[str, str | int], reads: int = 20
) -> float:
    """The median of ``reads`` GETs of ``path`` through an app's ``client``, in ms;
    each must answer 200."""
    timings = []
    for _ in range(reads):
        began = time.perf_counter()
        response = client.get(path, params=params)
        timings.append(time.perf_counter() - began)
        assert response.status_code == 200, response.text
    return 1000 * statistics.median(timings)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in columns]] + [
        [f"{v:.1f}" if isinstance(v, float) else str(v) for v in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path.relative_to(REPO)}")
    return path


def save_chart(
    name: str,
    title: str,
    labels: list[str],
    series: dict[str, list[float]],
    ylabel: str,
    log: bool = False,
) -> Path | None:
    """A grouped bar chart (one group per label, one bar per series) as results/NAME.png.
    Needs matplotlib (the ``bench`` extra); without it, says so and skips."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return None
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4))
    width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        positions = [i + index * width for i in range(len(labels))]
        axes.bar(positions, values, width, label=label)
    axes.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))])
    axes.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if log:
        axes.set_yscale("log")
    axes.legend()
    figure.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path.relative_to(REPO)}")
    return path


def implementations() -> list[str]:
    """Ours, plus torch's when torch 2.13 is installed. Only looked up, not imported:
    torch's servers and clients run in processes of their own, and importing torch
    here would cost every bench run two seconds of CPU for nothing."""
    if importlib.util.find_spec("torch") is None:
        print("torch is not installed: measuring ours only (pip install torch==2.13.0)")
        return ["ours"]
    return ["ours", "torch"]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "load_avg_1m": os.getloadavg()[0],
    }
