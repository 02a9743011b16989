"""Idle cost of holding timers: server CPU % and memory, ours against torch 2.13.

    python -m bench.idle_cost             # 1k, 10k and 100k timers, 10 s each
    python -m bench.idle_cost --smoke     # 1k timers, 1 s (CI keeps it working)

Both FileTimerServers run in their own process at max_interval=0.1, hold N
timers far from their deadlines for one live worker, and are sampled with
psutil. Memory is the RSS growth from loading the timers (torch's import is
not counted against it). The smoke run samples both servers at once (``side_by_side``):
it checks that they run and are sampled, not their figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import psutil

from bench.common import (
    cpu_seconds,
    fifo_line,
    implementations,
    print_table,
    save,
    save_chart,
    side_by_side,
    spawn_sleeper,
    start_file_server,
    stop_server,
    write_fifo,
)


def measure(impl: str, timers: int, seconds: float, settle: float) -> dict[str, float]:
    """``impl``'s server holding ``timers``: given ``settle`` seconds to take them in, then
    sampled for ``seconds``."""
    worker = spawn_sleeper()
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "timers.fifo")
        server = start_file_server(impl, fifo, 0.1)
        try:
            process = psutil.Process(server.pid)
            rss_before = process.memory_info().rss
            far = time.time() + 3600
            write_fifo(fifo, b"".join(fifo_line(worker.pid, f"s{i}", far) for i in range(timers)))
            time.sleep(settle)  # let the server take everything in
            cpu_start, wall_start = cpu_seconds(process), time.monotonic()
            time.sleep(seconds)
            cpu = cpu_seconds(process) - cpu_start
            wall = time.monotonic() - wall_start
            rss_after = process.memory_info().rss
        finally:
            stop_server(server)
            worker.kill()
            worker.wait()
    return {
        "cpu_percent": 100 * cpu / wall,
        "rss_growth_mb": (rss_after - rss_before) / 2**20,
        "rss_mb": rss_after / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    sizes = [1000] if args.smoke else [1000, 10_000, 100_000]
    # The smoke run checks that both servers run and are sampled: its figures mean little.
    seconds = 1.0 if args.smoke else args.seconds
    impls = implementations()
    rows, results = [], []
    plan = [(timers, impl) for timers in sizes for impl in impls]

    def row(step: tuple[int, str]) -> dict[str, float]:
        timers, impl = step
        print(f"  {impl} holding {timers} timers ...", flush=True)
        settle = 0.5 if args.smoke else max(2.0, timers / 20_000)
        return measure(impl, timers, seconds, settle)

    measured = side_by_side(row, plan, lanes=2 if args.smoke else 1)
    for (timers, impl), stats in zip(plan, measured, strict=True):
        results.append({"impl": impl, "timers": timers, **stats})
        rows.append([timers, impl, stats["cpu_percent"], stats["rss_growth_mb"], stats["rss_mb"]])
    print_table(
        f"Idle FileTimerServer at max_interval=0.1, {seconds:.0f} s sampled",
        ["timers", "impl", "CPU %", "RSS growth MB", "RSS MB"],
        rows,
    )
    name = "idle_cost_smoke" if args.smoke else "idle_cost"
    save(name, {"rows": results})
    save_chart(
        name,
        "Idle FileTimerServer CPU at max_interval=0.1",
        [f"{n:,} timers" for n in sizes],
        {impl: [r["cpu_percent"] for r in results if r["impl"] == impl] for impl in impls},
        "% of one core",
    )


if __name__ == "__main__":
    main()
