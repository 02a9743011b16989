"""FIFO throughput: requests/s a FileTimerServer takes from 8 clients using torch's
own FileTimerClient, ours against torch 2.13's, same run, with lost requests counted.

    python -m bench.fifo_throughput            # 8 clients x 2,500 acquire+release pairs
    python -m bench.fifo_throughput --smoke    # 2 clients x 100 pairs

The clients are torch's (or ours, if torch is missing). Each server counts what it
registered; a client that finds the pipe full (torch's client then raises) counts it
and retries. The rate is requests over the time from the clients' start to the last
request counted (or to 10 s of silence, if some never arrive). The smoke run measures
both servers at once (``side_by_side``): it checks that nothing is lost, not the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from bench.common import (
    implementations,
    print_table,
    python,
    save,
    save_chart,
    side_by_side,
    wait_for_reader,
)

SERVER = """
import json, os, sys, time
impl, fifo, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
if impl == "torch":
    from torch.distributed.elastic.timer import FileTimerServer
else:
    from timer_core import FileTimerServer
server = FileTimerServer(fifo, "bench", max_interval=0.1)
server.start()
print("ready", flush=True)
first = None
count = last_count = 0
last_change = time.monotonic()
while True:
    count = server._request_count
    now = time.monotonic()
    if count and first is None:
        first = now
    if count != last_count:
        last_count, last_change = count, now
    if count >= expected or (now - last_change > 10 and first is not None):
        break
    time.sleep(0.002)
print(json.dumps({"count": count, "done_at": last_change}), flush=True)
server.stop()
"""

CLIENT = """
import sys, time
client_module, fifo, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])
if client_module == "torch":
    from torch.distributed.elastic.timer import FileTimerClient
else:
    from timer_core import FileTimerClient
from bench.fifo_sender import Sender
client = FileTimerClient(fifo)
send = Sender(pause=0.001)

print("ready", flush=True)
sys.stdin.readline()  # the starting gun
began = time.monotonic()
for i in range(pairs):
    scope = f"step-{i % 10}"
    send(client.acquire, scope, time.time() + 600)
    send(client.release, scope)
print(time.monotonic() - began, send.full, flush=True)
sys.stdin.readline()  # stay alive until the server has counted everything
"""


def measure(impl: str, client_module: str, clients: int, pairs: int) -> dict[str, float]:
    expected = clients * pairs * 2
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "timers.fifo")
        server = python(SERVER, impl, fifo, str(expected))
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        wait_for_reader(fifo)
        workers = [python(CLIENT, client_module, fifo, str(pairs)) for _ in range(clients)]
        try:
            for worker in workers:
                assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            # CLOCK_MONOTONIC is shared by every process, so the server's
            # "done at" and this start time are on one clock.
            started_at = time.monotonic()
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            reports = [w.stdout.readline().split() for w in workers if w.stdout]
            if any(len(report) != 2 for report in reports):
                raise RuntimeError("a client process failed; see its traceback above")
            client_seconds = max(float(seconds) for seconds, _ in reports)
            pipe_full = sum(int(full) for _, full in reports)
            result = json.loads(server.stdout.readline())
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()
                for stream in (worker.stdin, worker.stdout):
                    if stream:
                        stream.close()
            server.kill()
            server.wait()
            for stream in (server.stdin, server.stdout):
                if stream:
                    stream.close()
    count = int(result["count"])
    seconds = float(result["done_at"]) - started_at
    return {
        "requests": expected,
        "processed": count,
        "lost": max(0, expected - count),
        # torch's client can raise after its line went through; the retry then repeats it.
        "repeated_by_retries": max(0, count - expected),
        "requests_per_s": count / seconds,
        "client_seconds": client_seconds,
        "pipe_full_retries": pipe_full,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=2500)
    args = parser.parse_args()
    clients, pairs = (2, 100) if args.smoke else (args.clients, args.pairs)
    impls = implementations()
    client_module = "torch" if "torch" in impls else "timer_core"
    rows, results = [], []

    def row(impl: str) -> dict[str, float]:
        print(f"  {impl} server, {clients} {client_module} clients x {pairs} pairs ...")
        return measure(impl, client_module, clients, pairs)

    measured = side_by_side(row, impls, lanes=2 if args.smoke else 1)
    for impl, stats in zip(impls, measured, strict=True):
        results.append({"impl": impl, "clients": clients, **stats})
        rows.append(
            [
                impl,
                clients,
                stats["requests"],
                stats["processed"],
                stats["lost"],
                stats["requests_per_s"],
                stats["pipe_full_retries"],
            ]
        )
    print_table(
        f"FIFO throughput with {client_module}'s FileTimerClient",
        ["server", "clients", "sent", "processed", "lost", "requests/s", "pipe-full retries"],
        rows,
    )
    name = "fifo_throughput_smoke" if args.smoke else "fifo_throughput"
    save(name, {"client": client_module, "rows": results})
    save_chart(
        name,
        f"FIFO requests/s from {clients} clients",
        impls,
        {"requests/s": [r["requests_per_s"] for r in results]},
        "requests/s",
    )


if __name__ == "__main__":
    main()
