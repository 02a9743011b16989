"""Record real flight-recorder dumps of hung gloo jobs, for the collective analysis's tests.

    python -m bench.record_flight_recorder OUT_DIR [SCENARIO ...]

Not a benchmark and not run by the test suite: it makes the recorded dumps under
``tests/timer_core/diagnosis/collectives/`` (torch 2.13, CPU, gloo). Each scenario runs
``torchrun --nproc-per-node=N`` on this very file (``--rank-job``). Every rank starts
torch's own worker server (``_WorkerServer``) on a Unix socket, runs its collectives
and hangs (or, where gloo fails at once, catches the error and sleeps). This process
then asks each rank's server for ``fr_trace_json``, exactly as the service will, writes
``OUT_DIR/SCENARIO/rank{R}.json`` trimmed of each entry's stack frames (read by neither
analysis), and ends the job. ``timeout`` bounds every run in case a step hangs here.

Scenarios:

- ``skip``: 3 ranks; rank 1 skips the 4th ``all_reduce`` of ``[8]`` float32 and sleeps.
- ``subgroup``: 4 ranks and ``new_group([1, 2])``; after one ``all_reduce`` on the
  default group, rank 1 enters an ``all_reduce`` of the subgroup while ranks 0, 2 and 3
  enter one of the default group.
- ``op``: 3 ranks; at the 3rd collective rank 2 calls ``broadcast`` where the others
  call ``all_reduce``.
- ``size``: 3 ranks; rank 2's 3rd ``all_reduce`` is of ``[16]`` where the others' are
  of ``[8]``.
- ``dtype``: 3 ranks; rank 2's 3rd ``all_reduce`` is of float64.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["SCENARIOS", "main"]

SCENARIOS = {"skip": 3, "subgroup": 4, "op": 3, "size": 3, "dtype": 3}
# The Python stack of each entry: the bulk of a dump, and read by neither analysis.
_UNREAD_ENTRY_KEYS = ("frames",)
_SETTLE_SECONDS = 3.0


def rank_job(scenario: str, socket_dir: str) -> None:
    """What each rank of a scenario runs (under torchrun)."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    # torch's C extension, typed loosely on purpose: its stubs lack the recorder's dump.
    c10d = importlib.import_module("torch._C._distributed_c10d")

    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    subgroup = dist.new_group([1, 2]) if scenario == "subgroup" else None
    server = c10d._WorkerServer(os.path.join(socket_dir, f"rank{rank}.sock"))  # kept: alive
    for _ in range(2 if scenario in ("op", "size", "dtype") else 3):
        dist.all_reduce(torch.ones(8))
    try:
        if scenario == "skip":
            if rank != 1:
                dist.all_reduce(torch.ones(8))
        elif scenario == "subgroup":
            dist.all_reduce(torch.ones(8), group=subgroup if rank == 1 else None)
        else:
            # gloo fails a size mismatch at once and aborts a rank, faster than anyone
            # could ask its server: so each rank dumps its own recorder right after it
            # enqueued the mismatched collective, before it waits on it.
            if rank == 2 and scenario == "op":
                work = dist.broadcast(torch.ones(8), src=0, async_op=True)
            elif rank == 2 and scenario == "size":
                work = dist.all_reduce(torch.ones(16), async_op=True)
            elif rank == 2 and scenario == "dtype":
                work = dist.all_reduce(torch.ones(8, dtype=torch.float64), async_op=True)
            else:
                work = dist.all_reduce(torch.ones(8), async_op=True)
            dump = c10d._dump_fr_trace_json()
            Path(socket_dir, f"rank{rank}.json").write_bytes(dump)
            assert work is not None
            work.wait()
    except Exception as error:  # gloo may fail a mismatch at once: keep the rank up
        print(f"rank {rank}: {type(error).__name__}: {error}", file=sys.stderr)
    time.sleep(600)
    server.shutdown()


def fetch_fr_trace(sock_path: Path, timeout: float = 5.0) -> dict[str, Any]:
    """One rank's ``fr_trace_json`` over its worker server's Unix socket."""

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(sock_path))

    connection = UnixConnection("localhost", timeout=timeout)
    try:
        connection.request("POST", "/handler/fr_trace_json")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"{sock_path}: HTTP {response.status}: {body[:200]!r}")
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def trim(dump: dict[str, Any]) -> dict[str, Any]:
    for entry in dump.get("entries", []):
        for key in _UNREAD_ENTRY_KEYS:
            entry.pop(key, None)
    return dump


def record(scenario: str, out_dir: Path) -> None:
    ranks = SCENARIOS[scenario]
    target = out_dir / scenario
    target.mkdir(parents=True, exist_ok=True)
    socket_dir = target / "sockets"
    socket_dir.mkdir(exist_ok=True)
    command = [
        "timeout",
        "-s",
        "KILL",
        "90",
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={ranks}",
        "--standalone",
        "-m",
        "bench.record_flight_recorder",
        "--rank-job",
        scenario,
        str(socket_dir),
    ]
    # The flight recorder's ring buffer; torch's own default may be 0 (off) for gloo.
    env = {**os.environ, "TORCH_FR_BUFFER_SIZE": "2000"}
    log = (out_dir / f"{scenario}.log").open("wb")  # torchrun's output, not committed
    job = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        sockets = [socket_dir / f"rank{rank}.sock" for rank in range(ranks)]
        early = [socket_dir / f"rank{rank}.json" for rank in range(ranks)]
        deadline = time.monotonic() + 60
        while not all(path.exists() for path in sockets):
            if time.monotonic() > deadline or job.poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(_SETTLE_SECONDS)  # every rank reaches its hang (or dumps its own)
        for rank, path in enumerate(sockets):
            if early[rank].exists():
                dump = json.loads(early[rank].read_bytes())
            else:
                dump = fetch_fr_trace(path)
            (target / f"rank{rank}.json").write_text(json.dumps(trim(dump), indent=1) + "\n")
    finally:
        # torchrun puts each rank in a session of its own: end them by pid, then it.
        for child in psutil.Process(job.pid).children(recursive=True):
            child.kill()
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        log.close()
        for path in socket_dir.iterdir():
            path.unlink()
        socket_dir.rmdir()


def main(argv: list[str]) -> None:
    if argv[:1] == ["--rank-job"]:
        rank_job(argv[1], argv[2])
        return
    out_dir = Path(argv[0])
    for scenario in argv[1:] or list(SCENARIOS):
        record(scenario, out_dir)
        print(f"recorded {scenario} in {out_dir / scenario}")


if __name__ == "__main__":
    main(sys.argv[1:])
