"""Capture over torch's worker server against py-spy, on the same N torch processes.

    python -m bench.worker_server_capture            # N = 1, 4, 8; 9 rounds (py-spy 3)
    python -m bench.worker_server_capture --smoke    # N = 1, 2; 1 round

Each torch process (torch's real ``_WorkerServer``, after one gloo ``all_reduce``, as
in the tests) serves on a Unix socket, then, in a second set, on TCP (``::``, beside
its TCPStore and gloo's listener). A round captures the N ranks at once, one thread a
rank as the service's capture does: find the server from the rank's own sockets, ping
it, fetch ``dump_traceback`` and ``fr_trace_json``. Reported, as medians: the wall time
of the N at once, and each rank's own time. On the same N Unix-socket processes, at
once: plain ``py-spy dump --pid``, and the service's py-spy capture as it is today
(``StackCapturer``: ``--native`` first, run as the worker's user, bounded).

Needs torch; py-spy and root for the comparison (skipped without).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import print_table, save
from tests.timer_core.diagnosis.torch_worker_server import TorchWorker, torch_worker
from timer_core.diagnosis.bounded_subprocess import run_bounded
from timer_core.diagnosis.stack_capture import StackCapturer
from timer_core.diagnosis.worker_server_capture import WorkerServerCapture, capture_worker_server
from timer_core.engine.process import identify

BUDGET = 2.0


def capture_all(pids: list[int]) -> tuple[float, list[float]]:
    """Wall ms of capturing ``pids`` at once, and each one's own ms."""

    def one(pid: int) -> float:
        capture = capture_worker_server(pid, BUDGET)
        if not isinstance(capture, WorkerServerCapture):
            raise RuntimeError(f"pid {pid}: {capture}")
        return 1000 * capture.seconds

    started = time.perf_counter()
    with ThreadPoolExecutor(len(pids)) as pool:
        each = list(pool.map(one, pids))
    return 1000 * (time.perf_counter() - started), each


def py_spy_all(pids: list[int], argv: list[str] | None) -> float:
    """Wall ms of taking the stacks of ``pids`` at once: with ``argv`` (``py-spy dump``
    plain), else the service's own py-spy capture (``--native`` first, as the user;
    its worker-server attempt left out, or it would measure the server again)."""
    capturer = StackCapturer(BUDGET, use_worker_server=False)

    def one(pid: int) -> None:
        if argv is not None:
            finished = run_bounded([*argv, str(pid)], 10.0)
            if finished.returncode != 0:
                raise RuntimeError(f"py-spy on {pid}: {finished.stderr.strip()}")
            return
        identity = identify(pid)
        assert identity is not None
        if not capturer.capture(identity).method.startswith("py-spy"):
            raise RuntimeError(f"py-spy could not take {pid}")

    started = time.perf_counter()
    with ThreadPoolExecutor(len(pids)) as pool:
        list(pool.map(one, pids))
    return 1000 * (time.perf_counter() - started)


def measure(workers: list[TorchWorker], sizes: list[int], rounds: int) -> dict[int, Any]:
    results: dict[int, Any] = {}
    for ranks in sizes:
        pids = [w.pid for w in workers[:ranks]]
        runs = [capture_all(pids) for _ in range(rounds)]
        results[ranks] = {
            "wall_ms": statistics.median(r[0] for r in runs),
            "per_rank_ms": statistics.median(ms for r in runs for ms in r[1]),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="N = 1, 2; one round")
    args = parser.parse_args()
    sizes = [1, 2] if args.smoke else [1, 4, 8]
    rounds, spy_rounds = (1, 1) if args.smoke else (9, 3)
    py_spy = StackCapturer().py_spy
    rows: list[list[Any]] = []
    payload: dict[str, Any] = {"rounds": rounds, "py_spy_rounds": spy_rounds, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        with ExitStack() as unix_stack:
            unix = [
                unix_stack.enter_context(torch_worker(str(Path(tmp) / f"rank{i}.sock")))
                for i in range(max(sizes))
            ]
            over_unix = measure(unix, sizes, rounds)
            plain = None if py_spy is None else [py_spy, "dump", "--pid"]
            spy, service = (
                {
                    n: statistics.median(
                        py_spy_all([w.pid for w in unix[:n]], argv) for _ in range(spy_rounds)
                    )
                    for n in sizes
                    if py_spy is not None
                }
                for argv in (plain, None)
            )
        with ExitStack() as tcp_stack:
            tcp = [
                tcp_stack.enter_context(torch_worker(tcp=True, store=True))
                for _ in range(max(sizes))
            ]
            over_tcp = measure(tcp, sizes, rounds)
    for n in sizes:
        spy_ms, service_ms = spy.get(n), service.get(n)
        payload["rows"].append(
            {
                "ranks": n,
                "unix": over_unix[n],
                "tcp": over_tcp[n],
                "py_spy_dump_wall_ms": spy_ms,
                "service_py_spy_wall_ms": service_ms,
            }
        )
        rows.append(
            [
                n,
                over_unix[n]["wall_ms"],
                over_unix[n]["per_rank_ms"],
                over_tcp[n]["wall_ms"],
                over_tcp[n]["per_rank_ms"],
                spy_ms if spy_ms is not None else "-",
                service_ms if service_ms is not None else "-",
                service_ms / over_unix[n]["wall_ms"] if service_ms is not None else "-",
            ]
        )
    print_table(
        "Worker-server capture of N torch ranks at once vs py-spy (medians, ms)",
        [
            "N",
            "unix all",
            "unix rank",
            "tcp all",
            "tcp rank",
            "py-spy dump all",
            "service py-spy all",
            "service / unix",
        ],
        rows,
    )
    save("worker_server_capture_smoke" if args.smoke else "worker_server_capture", payload)


if __name__ == "__main__":
    main()
