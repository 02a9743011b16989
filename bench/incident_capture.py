"""An incident of N torch ranks: their capture over torch's worker servers against
py-spy, and the kill lateness each gives, in the real engine, side by side in one run.

    sudo python -m bench.incident_capture            # N = 1, 4, 8; 7 rounds each
    sudo python -m bench.incident_capture --smoke    # N = 1, 2; 1 round (CI keeps it working)

The ranks are real processes (``tests.timer_core.diagnosis.torch_worker_server``): each
imports torch, runs one gloo ``all_reduce`` (its flight recorder holds an entry),
starts torch's ``_WorkerServer`` on a Unix socket of its own and waits in a function,
as a rank waiting for a peer. A round arms one timer per rank in a real ``Reaper``
(incidents on, the job's labels): rank 0's due after a short lead, the others' in ten
minutes. Rank 0's expiry opens the incident: the engine captures all N ranks at once
with the service's ``StackCapturer`` (``use_worker_server`` on: the worker server,
py-spy behind it; off: py-spy first, as before), publishes the incident, then SIGKILLs
rank 0, which a fresh rank replaces for the next round. The two ways alternate round
by round on the same ranks 1..N-1. Reported, as medians:

- capture: rank 0's deadline to the ``incident`` event (all N stacks in);
- kill: rank 0's deadline to its SIGKILL (the ``killed`` event's lateness), which
  waits for the capture by design;
- client: the N ranks taken at once by the worker-server client alone
  (``capture_worker_server``, one thread a rank: ``bench.worker_server_capture``),
  before the round, as a floor.

Needs torch, py-spy and root (py-spy attaches with ptrace).

The smoke run starts all its ranks at once before its first round (each imports torch:
most of its time); the full run starts each round's rank 0 in its round, so that no
import runs beside a capture it times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from bench.common import print_table, save
from bench.worker_server_capture import capture_all
from tests.timer_core.diagnosis.torch_worker_server import TorchWorker, torch_worker
from timer_core import EventKind, Reaper, TimerEvent
from timer_core.diagnosis.stack_capture import StackCapturer
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.event_details import Incident, Kill
from timer_core.engine.labels import Labels

LEAD_SECONDS = 0.3
# The capture's budget: a few seconds, as the README advises for nodes of torch ranks
# (py-spy --native takes 0.2 to 2 s a torch rank here).
BUDGET = 5.0
WAYS = {"worker-server": True, "py-spy": False}  # StackCapturer's use_worker_server


class Sockets:
    """Fresh socket paths in one directory: torch's server never returns on a path
    where a socket already exists."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.made = 0

    def next(self) -> str:
        self.made += 1
        return str(self.directory / f"rank-{self.made}.sock")


@contextmanager
def engine(use_worker_server: bool) -> Iterator[tuple[Reaper, list[TimerEvent]]]:
    capturer = StackCapturer(BUDGET, use_worker_server=use_worker_server)
    reaper = Reaper(capturer=capturer, incident_window=60.0)
    events: list[TimerEvent] = []
    reaper.add_listener(events.append)
    reaper.start()
    try:
        yield reaper, events
    finally:
        reaper.stop()


# A fresh rank 0 for a round: started then, or taken from ranks started beforehand.
Trigger = Callable[[], AbstractContextManager[TorchWorker]]


def one_round(
    way: str, peers: list[TorchWorker], trigger_of: Trigger, job_id: str
) -> dict[str, Any]:
    """One incident of rank 0 (fresh) and ``peers``, captured ``way``."""
    with trigger_of() as trigger, engine(WAYS[way]) as (reaper, events):
        ranks = [trigger, *peers]
        client_ms, _ = capture_all([w.pid for w in ranks])
        deadline = time.time() + LEAD_SECONDS
        for rank, worker in enumerate(ranks):
            labels = Labels(job_id=job_id, rank=rank, world_size=len(ranks))
            due = deadline if rank == 0 else deadline + 600
            reaper.acquire(ArmRequest(worker.pid, "step", due, labels=labels))
        give_up = time.monotonic() + LEAD_SECONDS + 4 * BUDGET
        incident = killed = None
        while (incident is None or killed is None) and time.monotonic() < give_up:
            time.sleep(0.01)
            for event in list(events):
                if event.kind == EventKind.INCIDENT and isinstance(event.detail, Incident):
                    incident = event
                if event.kind == EventKind.KILLED and event.timer.pid == trigger.pid:
                    killed = event
        for worker in peers:
            reaper.acquire(ArmRequest(worker.pid, "step", -1))  # released for the next round
        if incident is None or killed is None or not isinstance(killed.detail, Kill):
            raise RuntimeError(f"{job_id}: no incident and kill within {4 * BUDGET} s")
        assert isinstance(incident.detail, Incident)
        stacks = [c.stack for c in incident.detail.captures]
        return {
            "capture_ms": 1000 * (incident.at - deadline),
            "kill_ms": 1000 * killed.detail.late,
            "client_ms": client_ms,
            "methods": sorted(s.method if s is not None else "none" for s in stacks),
            "rank_ms": [1000 * s.seconds for s in stacks if s is not None],
        }


def measure(size: int, rounds: int, pool: list[TorchWorker], trigger_of: Trigger) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for round_ in range(rounds):
        # Alternated, and the first way swapped each round: neither always runs first.
        order = list(WAYS) if round_ % 2 == 0 else list(reversed(WAYS))
        for way in order:
            job_id = f"bench-{size}-{way}-{round_}"
            runs[way].append(one_round(way, pool[: size - 1], trigger_of, job_id))
    result: dict[str, Any] = {"ranks": size, "rounds": rounds}
    for way, taken in runs.items():
        result[way] = {
            "capture_ms": [r["capture_ms"] for r in taken],
            "kill_ms": [r["kill_ms"] for r in taken],
            "client_ms": [r["client_ms"] for r in taken],
            "methods": [r["methods"] for r in taken],
            "capture_median_ms": statistics.median(r["capture_ms"] for r in taken),
            "kill_median_ms": statistics.median(r["kill_ms"] for r in taken),
            "client_median_ms": statistics.median(r["client_ms"] for r in taken),
            "rank_median_ms": statistics.median(ms for r in taken for ms in r["rank_ms"]),
        }
    return result


def started_together(stack: ExitStack, sockets: Sockets, count: int) -> list[TorchWorker]:
    """``count`` torch workers started at once, each stopped when ``stack`` closes."""

    def start(path: str) -> tuple[AbstractContextManager[TorchWorker], TorchWorker]:
        manager = torch_worker(path)
        return manager, manager.__enter__()

    paths = [sockets.next() for _ in range(count)]
    with ThreadPoolExecutor(max_workers=count) as starting:
        futures = [starting.submit(start, path) for path in paths]
    workers = []
    for future in futures:
        if future.exception() is None:
            manager, worker = future.result()
            stack.push(manager)
            workers.append(worker)
    for future in futures:
        future.result()  # a start that failed, once every started worker will be stopped
    return workers


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
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        sockets = Sockets(Path(tmp))
        peers = max(sizes) - 1
        if args.smoke:
            triggers = len(sizes) * rounds * len(WAYS)
            started = started_together(stack, sockets, peers + triggers)
            pool, spare = started[:peers], started[peers:]

            def trigger_of() -> AbstractContextManager[TorchWorker]:
                return nullcontext(spare.pop())  # killed in its round, reaped at the end

        else:
            pool = [stack.enter_context(torch_worker(sockets.next())) for _ in range(peers)]

            def trigger_of() -> AbstractContextManager[TorchWorker]:
                return torch_worker(sockets.next())

        for size in sizes:
            print(f"  N={size} ...", flush=True)
            results.append(measure(size, rounds, pool, trigger_of))
    rows = []
    for result in results:
        server, spy = result["worker-server"], result["py-spy"]
        rows.append(
            [
                result["ranks"],
                server["capture_median_ms"],
                spy["capture_median_ms"],
                spy["capture_median_ms"] / server["capture_median_ms"],
                server["kill_median_ms"],
                spy["kill_median_ms"],
                spy["kill_median_ms"] / server["kill_median_ms"],
                server["client_median_ms"],
                server["rank_median_ms"],
                spy["rank_median_ms"],
            ]
        )
        result["capture_ratio"] = rows[-1][3]
        result["kill_ratio"] = rows[-1][6]
    print_table(
        f"Incident of N torch ranks: worker server vs py-spy (medians of {rounds}, ms)",
        [
            "N",
            "capture ws",
            "capture py-spy",
            "x",
            "kill ws",
            "kill py-spy",
            "x",
            "client ws",
            "rank ws",
            "rank py-spy",
        ],
        rows,
    )
    name = "incident_capture_smoke" if args.smoke else "incident_capture"
    save(name, {"budget_s": BUDGET, "lead_s": LEAD_SECONDS, "rows": results})


if __name__ == "__main__":
    main()
