"""HTTP throughput and latency of the real service, every event recorded in SQLite.

    python -m bench.http_throughput                 # 1, 16 and 64 clients, 10 s each
    python -m bench.http_throughput --smoke         # 4 clients, 2 s

Each client loops acquire (POST /timers) then release (POST /timers/release)
on its own scope for one live worker. A "pair" is one acquire plus its release.
The load generator (keep-alive http.client connections on threads, spread
over two processes) shares the two cores with the service, so the figures
are a floor for what the service does on its own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import percentile, print_table, save, save_chart, spawn_sleeper
from tests.app.service_process import ServiceProcess

GENERATOR_PROCESSES = 2


def client_loop(
    port: int, pid: int, scope: str, stop_at: float, latencies: list[float]
) -> tuple[int, int]:
    """One client: a keep-alive connection, acquire then release, until ``stop_at``."""
    pairs = errors = 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    acquire = json.dumps({"pid": pid, "scope_id": scope, "expires_in": 60})
    release = json.dumps({"pid": pid, "scope_id": scope})
    while time.monotonic() < stop_at:
        for path, body, expected in (("/timers", acquire, 201), ("/timers/release", release, 200)):
            began = time.perf_counter()
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
                ok = response.status == expected
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            latencies.append(time.perf_counter() - began)
            errors += not ok
        pairs += 1
    connection.close()
    return pairs, errors


def client_process(port: int, pid: int, first: int, count: int, seconds: float) -> dict[str, Any]:
    """``count`` clients on threads of one process (several processes share the load)."""
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    with ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(client_loop, port, pid, f"bench-{first + i}", stop_at, latencies)
            for i in range(count)
        ]
        results = [future.result() for future in futures]
    return {
        "pairs": sum(p for p, _ in results),
        "errors": sum(e for _, e in results),
        "latencies": latencies,
    }


def run_load(port: int, pid: int, clients: int, seconds: float) -> dict[str, float]:
    processes = min(clients, GENERATOR_PROCESSES)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    firsts = [sum(shares[:i]) for i in range(processes)]
    began = time.monotonic()
    with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
        parts = list(
            pool.map(
                client_process,
                [port] * processes,
                [pid] * processes,
                firsts,
                shares,
                [seconds] * processes,
            )
        )
    elapsed = time.monotonic() - began
    latencies = [value for part in parts for value in part["latencies"]]
    pairs = sum(part["pairs"] for part in parts)
    return {
        "clients": clients,
        "pairs_per_s": pairs / seconds,
        "requests_per_s": 2 * pairs / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "errors": sum(part["errors"] for part in parts),
        "requests": 2 * pairs,
        "wall_seconds": elapsed,
    }


def recorded_events(url: str) -> int:
    """Events on disk, by paging ``GET /events`` to the end once the recorder is idle."""
    while httpx.get(url + "/healthz").json()["recorder"]["backlog"]:
        time.sleep(0.1)
    count, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(url + "/events", params=params).json()
        count += len(page["items"])
        cursor = page["next"]
        if cursor is None:
            return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    levels = [4] if args.smoke else [1, 16, 64]
    seconds = 2.0 if args.smoke else args.seconds
    worker = spawn_sleeper()
    rows, results = [], []
    requests_so_far = 0
    with tempfile.TemporaryDirectory() as tmp:
        service = ServiceProcess(Path(tmp), "--log-level", "warning").start()
        try:
            for clients in levels:
                print(f"  {clients} clients for {seconds:.0f} s ...", flush=True)
                stats = run_load(service.port, worker.pid, clients, seconds)
                stats["events_recorded"] = recorded_events(service.url)
                requests_so_far += int(stats["requests"])
                # Every request made one event (acquired or released), none lost.
                stats["events_lost"] = requests_so_far - stats["events_recorded"]
                results.append(stats)
                rows.append(
                    [
                        clients,
                        stats["pairs_per_s"],
                        stats["requests_per_s"],
                        stats["p50_ms"],
                        stats["p99_ms"],
                        int(stats["errors"]),
                        int(stats["events_lost"]),
                    ]
                )
        finally:
            service.stop()
            worker.kill()
            worker.wait()
    print_table(
        "HTTP acquire+release through the real service (SQLite, every event recorded)",
        ["clients", "pairs/s", "requests/s", "p50 ms", "p99 ms", "errors", "events lost"],
        rows,
    )
    name = "http_throughput_smoke" if args.smoke else "http_throughput"
    save(name, {"rows": results})
    save_chart(
        name,
        "HTTP acquire+release pairs per second (every event in SQLite)",
        [f"{int(r['clients'])} clients" for r in results],
        {"pairs/s": [r["pairs_per_s"] for r in results]},
        "pairs/s",
    )


if __name__ == "__main__":
    main()
