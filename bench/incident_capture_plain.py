"""Incident capture for N ranks at once: the real service, N real plain-Python
processes of one job (no torch, no worker server), their stacks taken by py-spy before
the first kill. ``bench.incident_capture`` compares torch ranks over their worker
servers with py-spy, in the engine.

    python -m bench.incident_capture_plain            # N = 1, 4, 8; 7 rounds each
    python -m bench.incident_capture_plain --smoke    # N = 1, 2; 1 round (CI keeps it working)

Each round starts N workers (plain Python, each stuck in a function), arms one timer
per worker over HTTP with the job's labels (rank 0 due after a short lead, the others
far later), and reads back from the service's events:

- capture: the trigger's deadline to the ``incident`` event, when the stacks of all N
  ranks are in (taken at once, within the stack budget, default 2 s);
- kill latency: the trigger's deadline to its signal (the ``killed`` event's latency);
- stacks: how many of the N the incident holds.

Needs root (py-spy attaches with ptrace) and py-spy.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import print_table, save
from tests.app.service_process import ServiceProcess
from timer_core.diagnosis.stack_capture import StackCapturer

LEAD_SECONDS = 0.5
WORKER = """
import time


def stuck_in_a_step():
    print("ready", flush=True)
    while True:
        time.sleep(0.05)


stuck_in_a_step()
"""


def start_workers(count: int) -> list[subprocess.Popen[bytes]]:
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE)
        for _ in range(count)
    ]
    for worker in workers:
        assert worker.stdout is not None
        with worker.stdout:
            if worker.stdout.readline() != b"ready\n":
                raise RuntimeError(f"worker {worker.pid} did not start")
    return workers


def events_of(http: httpx.Client, timer_id: int, kind: str) -> list[dict[str, Any]]:
    answer = http.get("/events", params={"timer_id": timer_id, "kind": kind})
    answer.raise_for_status()
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def one_round(http: httpx.Client, ranks: int, job_id: str) -> dict[str, float]:
    """One incident of ``ranks`` ranks: its capture time, the trigger's kill latency."""
    workers = start_workers(ranks)
    try:
        deadline = time.time() + LEAD_SECONDS
        trigger_id = 0
        for rank, worker in enumerate(workers):
            body = {
                "pid": worker.pid,
                "scope_id": "step",
                "expiration_time": deadline if rank == 0 else deadline + 600,
                "job_id": job_id,
                "rank": rank,
                "world_size": ranks,
            }
            answer = http.post("/timers", json=body)
            answer.raise_for_status()
            if rank == 0:
                trigger_id = int(answer.json()["id"])
        give_up = time.monotonic() + LEAD_SECONDS + 30
        while time.monotonic() < give_up:
            incident = events_of(http, trigger_id, "incident")
            killed = events_of(http, trigger_id, "killed")
            if incident and killed:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"no incident and kill for {job_id} within 30 s")
        return {
            "capture_s": float(incident[0]["at"]) - deadline,
            "kill_latency_s": float(killed[0]["detail"]["latency"]),
            "stacks": float(incident[0]["detail"]["stacks"]),
        }
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="N = 1, 2; one round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if StackCapturer().py_spy is None:
        raise SystemExit("needs py-spy (pip install py-spy), run as root")
    sizes = [1, 2] if args.smoke else [1, 4, 8]
    rounds = 1 if args.smoke else args.rounds
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        service = ServiceProcess(Path(tmp), "--log-level", "warning").start()
        try:
            with httpx.Client(base_url=service.url, timeout=30) as http:
                for ranks in sizes:
                    print(f"  N={ranks} ...", flush=True)
                    runs = [
                        one_round(http, ranks, f"bench-{ranks}-{round_}")
                        for round_ in range(rounds)
                    ]
                    results.append(
                        {
                            "ranks": ranks,
                            "rounds": rounds,
                            "capture_ms": [1000 * r["capture_s"] for r in runs],
                            "kill_latency_ms": [1000 * r["kill_latency_s"] for r in runs],
                            "stacks": [int(r["stacks"]) for r in runs],
                        }
                    )
        finally:
            service.stop()
    base_capture = statistics.median(results[0]["capture_ms"])
    base_kill = statistics.median(results[0]["kill_latency_ms"])
    rows = []
    for result in results:
        capture = statistics.median(result["capture_ms"])
        kill = statistics.median(result["kill_latency_ms"])
        result |= {
            "capture_median_ms": capture,
            "kill_latency_median_ms": kill,
            "capture_ratio_to_1": capture / base_capture,
            "kill_ratio_to_1": kill / base_kill,
        }
        rows.append(
            [
                result["ranks"],
                result["rounds"],
                capture,
                result["capture_ratio_to_1"],
                kill,
                result["kill_ratio_to_1"],
                f"{min(result['stacks'])}/{result['ranks']}",
            ]
        )
    print_table(
        "Incident capture, N ranks at once (medians)",
        ["N", "rounds", "capture ms", "x N=1", "kill ms", "x N=1", "min stacks"],
        rows,
    )
    save(
        "incident_capture_plain_smoke" if args.smoke else "incident_capture_plain",
        {"rows": results},
    )


if __name__ == "__main__":
    main()
