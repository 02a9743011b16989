"""Kill latency, deadline to worker death: ours against torch 2.13, same run.

    python -m bench.kill_latency            # 30 kills per row, max_interval 0.1, 1, 10
    python -m bench.kill_latency --smoke    # 3 kills, max_interval 0.1 (CI keeps it working)

Each row spawns sleeping workers, arms one timer per worker with deadlines
spread over two seconds (half a second in the smoke run: its 3 kills need no more),
and records when each worker actually dies. The smoke run takes its rows two at a time
(``side_by_side``): it checks that every worker is killed, not how soon.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    fifo_line,
    implementations,
    print_table,
    save,
    save_chart,
    side_by_side,
    spawn_sleeper,
    start_file_server,
    stop_server,
    summary_ms,
    write_fifo,
)
from tests.app.service_process import ServiceProcess
from timer_core import TimerRequest

Arm = Callable[[dict[int, float]], None]

SPREAD_SECONDS = 2.0
SMOKE_SPREAD_SECONDS = 0.5
LEAD_SECONDS = 0.5


def run_local_server(impl: str, queue: Any, max_interval: float, ready: Any, stop: Any) -> None:
    if impl == "torch":
        from torch.distributed.elastic.timer import LocalTimerServer
    else:
        from timer_core import LocalTimerServer
    server = LocalTimerServer(queue, max_interval=max_interval)
    server.start()
    ready.set()
    stop.wait()
    server.stop()


@contextmanager
def local_server(impl: str, max_interval: float, tmp: Path) -> Iterator[Arm]:
    ctx = mp.get_context("spawn")
    queue, ready, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    process = ctx.Process(target=run_local_server, args=(impl, queue, max_interval, ready, stop))
    process.start()
    ready.wait(60)

    def arm(deadlines: dict[int, float]) -> None:
        for pid, deadline in deadlines.items():
            queue.put(TimerRequest(pid, "bench", deadline))

    try:
        yield arm
    finally:
        stop.set()
        process.join(max_interval + 10)
        if process.is_alive():
            process.kill()


@contextmanager
def file_server(impl: str, max_interval: float, tmp: Path) -> Iterator[Arm]:
    fifo = str(tmp / "timers.fifo")
    server = start_file_server(impl, fifo, max_interval)
    try:
        yield lambda deadlines: write_fifo(fifo, fifo_lines(deadlines))
    finally:
        stop_server(server)


@contextmanager
def service_over_http(impl: str, max_interval: float, tmp: Path) -> Iterator[Arm]:
    service = ServiceProcess(tmp, "--log-level", "warning").start()

    def arm(deadlines: dict[int, float]) -> None:
        with httpx.Client(base_url=service.url) as http:
            for pid, deadline in deadlines.items():
                body = {"pid": pid, "scope_id": "bench", "expiration_time": deadline}
                http.post("/timers", json=body).raise_for_status()

    try:
        yield arm
    finally:
        service.stop()


@contextmanager
def service_over_fifo(impl: str, max_interval: float, tmp: Path) -> Iterator[Arm]:
    fifo = str(tmp / "timers.fifo")
    service = ServiceProcess(tmp, "--fifo", fifo, "--log-level", "warning").start()
    try:
        yield lambda deadlines: write_fifo(fifo, fifo_lines(deadlines))
    finally:
        service.stop()


def fifo_lines(deadlines: dict[int, float]) -> bytes:
    return b"".join(fifo_line(pid, "bench", deadline) for pid, deadline in deadlines.items())


SERVERS: dict[str, Callable[[str, float, Path], AbstractContextManager[Arm]]] = {
    "LocalTimerServer": local_server,
    "FileTimerServer": file_server,
    "service, HTTP": service_over_http,
    "service, FIFO": service_over_fifo,
}


def measure(
    server_kind: str, impl: str, max_interval: float, kills: int, spread: float
) -> list[float]:
    workers = [spawn_sleeper() for _ in range(kills)]
    time.sleep(0.3)  # let the sleepers finish starting
    deaths: dict[int, float] = {}

    def watch(process: Any) -> None:
        process.wait()
        deaths[process.pid] = time.time()

    watchers = [threading.Thread(target=watch, args=(w,), daemon=True) for w in workers]
    for thread in watchers:
        thread.start()
    server = SERVERS[server_kind]
    with tempfile.TemporaryDirectory() as tmp, server(impl, max_interval, Path(tmp)) as arm:
        start = time.time() + LEAD_SECONDS
        deadlines = {w.pid: start + i * spread / kills for i, w in enumerate(workers)}
        arm(deadlines)
        wait_for(watchers, max_interval, spread)
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return [deaths[pid] - deadline for pid, deadline in deadlines.items() if pid in deaths]


def wait_for(watchers: list[threading.Thread], max_interval: float, spread: float) -> None:
    give_up = time.monotonic() + LEAD_SECONDS + spread + 2 * max_interval + 10
    for thread in watchers:
        thread.join(max(0.0, give_up - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few kills, one interval")
    parser.add_argument("--kills", type=int, default=30)
    args = parser.parse_args()
    kills = 3 if args.smoke else args.kills
    intervals = [0.1] if args.smoke else [0.1, 1.0, 10.0]
    spread = SMOKE_SPREAD_SECONDS if args.smoke else SPREAD_SECONDS
    impls = implementations()
    rows, results = [], []
    plan = [
        (kind, max_interval, impl)
        for kind in ("LocalTimerServer", "FileTimerServer")
        for max_interval in intervals
        for impl in impls
    ]
    # The service has no max_interval: it reaps at the deadline.
    plan += [("service, HTTP", 0.0, "ours"), ("service, FIFO", 0.0, "ours")]

    def row(step: tuple[str, float, str]) -> list[float]:
        server_kind, max_interval, impl = step
        print(f"  {impl} {server_kind} max_interval={max_interval or '-'} ...", flush=True)
        return measure(server_kind, impl, max_interval, kills, spread)

    measured = side_by_side(row, plan, lanes=2 if args.smoke else 1)
    for (server_kind, max_interval, impl), latencies in zip(plan, measured, strict=True):
        stats = summary_ms(latencies)
        missed = kills - len(latencies)
        results.append(
            {
                "server": server_kind,
                "impl": impl,
                "max_interval": max_interval or None,
                "missed": missed,
                **stats,
            }
        )
        rows.append(
            [
                server_kind,
                impl,
                max_interval or "-",
                stats["n"],
                missed,
                stats["p50_ms"],
                stats["p99_ms"],
                stats["max_ms"],
            ]
        )
    print_table(
        "Kill latency, deadline to worker death (ms)",
        ["server", "impl", "max_interval", "kills", "missed", "p50", "p99", "max"],
        rows,
    )
    name = "kill_latency_smoke" if args.smoke else "kill_latency"
    save(name, {"rows": results})
    labels = list(dict.fromkeys(f"{r['server']} {r['max_interval'] or ''}" for r in results))
    by_impl: dict[str, dict[str, float]] = {impl: {} for impl in impls}
    for r in results:
        by_impl[r["impl"]][f"{r['server']} {r['max_interval'] or ''}"] = r["p99_ms"]
    save_chart(
        name,
        "Kill latency p99, deadline to worker death (log scale)",
        labels,
        {
            impl: [values.get(label, float("nan")) for label in labels]
            for impl, values in by_impl.items()
        },
        "ms",
        log=True,
    )


if __name__ == "__main__":
    main()
