"""HTTP cost of the real service against bare FastAPI, measured by wrk in one run.

    python -m bench.http_wrk            # 16 connections, 10 s per server, 3 rounds
    python -m bench.http_wrk --smoke    # 1 s, 1 round

Both servers run on the same uvicorn (httptools) in a process of their own and get
the same acquire+release pairs (bench/wrk/pairs.lua) for live worker pids. The real
service records every event in SQLite and answers each acquisition only after its
commit; the bare app parses the same bodies with the same models and records
nothing. wrk runs one thread per connection, so each connection's acquire and release
stay in order. The rounds alternate the two servers, and the medians are compared:
the ratio (service / bare) is what this machine's noise cannot fake.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, print_table, save, spawn_sleeper
from tests.app.service_process import ServiceProcess, free_port

SCRIPT = Path(__file__).parent / "wrk" / "pairs.lua"
CONNECTIONS = 16

# The same routes and body models as the service, answering at once.
BARE_APP = """
import sys, time, uvicorn
from fastapi import FastAPI, Response
from app.access.http_protocol import protocol_class
from app.db.models import TimerCreate, TimerRelease

app = FastAPI()

@app.post("/timers", status_code=201)
async def acquire(body: TimerCreate) -> dict:
    now = time.time()
    return {"id": 1, "pid": body.pid, "scope_id": body.scope_id, "signal": body.signal,
            "source": "http", "state": "active", "acquired_at": now,
            "expiration_time": now + (body.expires_in or 0), "ended_at": None,
            "end_reason": None, "uid": 0}

@app.post("/timers/release")
async def release(body: TimerRelease) -> dict:
    now = time.time()
    return {"id": 1, "pid": body.pid, "scope_id": body.scope_id, "signal": 9,
            "source": "http", "state": "released", "acquired_at": now,
            "expiration_time": now, "ended_at": now, "end_reason": None, "uid": 0}

@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http=protocol_class(),
            log_level="warning", access_log=False)
"""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid``, all its threads, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, seconds: float, pids: list[int], server_pid: int) -> dict[str, float]:
    """wrk's figures, and the server's CPU time per request: on a machine shared with
    other work, throughput moves with their load, CPU per request much less."""
    load = [f"-t{CONNECTIONS}", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency"]
    cpu_before = cpu_seconds(server_pid)
    done = subprocess.run(
        ["wrk", *load, "-s", str(SCRIPT), url],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_PIDS": ",".join(map(str, pids))},
        check=True,
    )
    measured = parse_wrk(done.stdout)
    used = cpu_seconds(server_pid) - cpu_before
    return measured | {"cpu_us_per_request": 1e6 * used / max(1.0, measured["requests"])}


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms), and non-2xx answers, from ``wrk --latency``."""

    def millis(label: str) -> float:
        found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {label} latency in wrk's output:\n{output}")
        value, unit = float(found.group(1)), found.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if rate is None or total is None:
        raise ValueError(f"no request count in wrk's output:\n{output}")
    return {
        "requests": float(total.group(1)),
        "requests_per_second": float(rate.group(1)),
        "p50_ms": millis("50%"),
        "p99_ms": millis("99%"),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


def start_bare() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(BARE_APP), str(port)], cwd=REPO
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the bare FastAPI app did not start")


def recorded_events(service: ServiceProcess) -> int:
    """How many acquired+released events the service has in its database."""
    total = 0
    for kind in ("acquired", "released"):
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"kind": kind, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = httpx.get(service.url + "/events", params=params, timeout=30).json()
            total += len(page["items"])
            cursor = page["next"]
            if not cursor:
                break
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="1 s, one round")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    # wrk's shortest run: thousands of requests still, each answered one's event counted.
    seconds, rounds = (1, 1) if args.smoke else (10, 3)
    workers = [spawn_sleeper() for _ in range(4)]
    pids = [worker.pid for worker in workers]
    results: dict[str, list[dict[str, float]]] = {"service": [], "bare FastAPI": []}
    answered_2xx = 0
    with tempfile.TemporaryDirectory() as tmp:
        service = ServiceProcess(Path(tmp)).start()
        assert service.process is not None
        bare, bare_url = start_bare()
        servers = (
            ("service", service.url, service.process.pid),
            ("bare FastAPI", bare_url, bare.pid),
        )
        try:
            for round_number in range(rounds):
                for name, url, server_pid in servers:
                    measured = run_wrk(url, seconds, pids, server_pid)
                    results[name].append(measured)
                    print(f"round {round_number + 1}/{rounds} {name}: {measured}", flush=True)
                    if name == "service":
                        answered_2xx += int(measured["requests"] - measured["non_2xx"])
            events = recorded_events(service)
        finally:
            service.stop()
            bare.kill()
            bare.wait()
            for worker in workers:
                worker.kill()
                worker.wait()

    def median(name: str, key: str) -> float:
        return statistics.median(row[key] for row in results[name])

    rows = [
        [
            name,
            median(name, "requests_per_second"),
            median(name, "p50_ms"),
            median(name, "p99_ms"),
            median(name, "cpu_us_per_request"),
        ]
        for name in results
    ]
    ratio = median("service", "requests_per_second") / median("bare FastAPI", "requests_per_second")
    print_table(
        f"acquire+release pairs, {CONNECTIONS} connections (wrk), medians of {rounds}",
        ["server", "requests/s", "p50 ms", "p99 ms", "CPU us/request"],
        rows,
    )
    print(f"ratio service / bare: {ratio:.2f}; events recorded: {events}")
    save(
        "http_wrk_smoke" if args.smoke else "http_wrk",
        {
            "connections": CONNECTIONS,
            "seconds": seconds,
            "rounds": results,
            "ratio": ratio,
            "service_p99_ms": median("service", "p99_ms"),
            "service_cpu_us_per_request": median("service", "cpu_us_per_request"),
            "events_recorded": events,
            # Every acquisition and release answered 2xx has its event (an acquisition
            # still in flight when wrk stopped may add one more).
            "service_answered_2xx": answered_2xx,
        },
    )


if __name__ == "__main__":
    main()
