"""Kill latency, deadline to worker death: ours against torch 2.13, same run.

    python -m bench.kill_latency            # 30 kills per row, max_interval 0.1, 1, 10
    python -m bench.kill_latency --smoke    # 3 kills, max_interval 0.1 (CI keeps it working)

Each row spawns sleeping workers, arms one timer per worker with deadlines
spread over two seconds, and records when each worker actually dies.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time
from typing import Any

from bench.common import (
    fifo_line,
    implementations,
    print_table,
    save,
    spawn_sleeper,
    start_file_server,
    stop_server,
    summary_ms,
    write_fifo,
)

SPREAD_SECONDS = 2.0
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


def measure(server_kind: str, impl: str, max_interval: float, kills: int) -> list[float]:
    workers = [spawn_sleeper() for _ in range(kills)]
    time.sleep(0.3)  # let the sleepers finish starting
    deaths: dict[int, float] = {}

    def watch(process: Any) -> None:
        process.wait()
        deaths[process.pid] = time.time()

    watchers = [threading.Thread(target=watch, args=(w,), daemon=True) for w in workers]
    for thread in watchers:
        thread.start()
    start = time.time() + LEAD_SECONDS
    deadlines = {w.pid: start + i * SPREAD_SECONDS / kills for i, w in enumerate(workers)}
    with tempfile.TemporaryDirectory() as tmp:
        if server_kind == "FileTimerServer":
            fifo = os.path.join(tmp, "timers.fifo")
            server = start_file_server(impl, fifo, max_interval)
            try:
                lines = b"".join(fifo_line(pid, "bench", d) for pid, d in deadlines.items())
                write_fifo(fifo, lines)
                wait_for(watchers, max_interval)
            finally:
                stop_server(server)
        else:
            ctx = mp.get_context("spawn")
            queue, ready, stop = ctx.Queue(), ctx.Event(), ctx.Event()
            process = ctx.Process(
                target=run_local_server, args=(impl, queue, max_interval, ready, stop)
            )
            process.start()
            ready.wait(60)
            try:
                from timer_core import TimerRequest

                for pid, deadline in deadlines.items():
                    queue.put(TimerRequest(pid, "bench", deadline))
                wait_for(watchers, max_interval)
            finally:
                stop.set()
                process.join(max_interval + 10)
                if process.is_alive():
                    process.kill()
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return [deaths[pid] - deadline for pid, deadline in deadlines.items() if pid in deaths]


def wait_for(watchers: list[threading.Thread], max_interval: float) -> None:
    give_up = time.monotonic() + LEAD_SECONDS + SPREAD_SECONDS + 2 * max_interval + 10
    for thread in watchers:
        thread.join(max(0.0, give_up - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few kills, one interval")
    parser.add_argument("--kills", type=int, default=30)
    args = parser.parse_args()
    kills = 3 if args.smoke else args.kills
    intervals = [0.1] if args.smoke else [0.1, 1.0, 10.0]
    impls = implementations()
    rows, results = [], []
    for server_kind in ("LocalTimerServer", "FileTimerServer"):
        for max_interval in intervals:
            for impl in impls:
                print(f"  {impl} {server_kind} max_interval={max_interval} ...", flush=True)
                latencies = measure(server_kind, impl, max_interval, kills)
                stats = summary_ms(latencies)
                missed = kills - len(latencies)
                results.append(
                    {
                        "server": server_kind,
                        "impl": impl,
                        "max_interval": max_interval,
                        "missed": missed,
                        **stats,
                    }
                )
                rows.append(
                    [
                        server_kind,
                        impl,
                        max_interval,
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
    save("kill_latency_smoke" if args.smoke else "kill_latency", {"rows": results})


if __name__ == "__main__":
    main()
