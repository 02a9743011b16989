"""A real process running torch's worker server (``_WorkerServer``), as a rank does:
on a Unix socket (what ``worker_main()`` starts from ``TORCH_WORKER_SERVER_SOCKET``)
and/or on TCP bound to ``::`` (what ``start_debug_server()`` starts), after one gloo
``all_reduce`` so that its flight recorder holds an entry. Needs torch: the tests
that use it skip without.

``fork`` starts the servers and then forks a child that holds the very same listening
socket, as a worker inherits it from a launcher that still serves it: the child's
own descriptors then point at a server that is not the child.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

__all__ = ["TorchWorker", "needs_torch", "torch_worker"]

try:
    import torch  # noqa: F401 - only to know whether it is there

    _HAVE_TORCH = True
except ImportError:
    _HAVE_TORCH = False
needs_torch = pytest.mark.skipif(not _HAVE_TORCH, reason="needs torch (the test extra)")

SCRIPT = r"""
import json, os, sys, time
import torch
import torch.distributed as dist
from torch._C._distributed_c10d import _WorkerServer

unix, tcp = sys.argv[1], sys.argv[2] == "tcp"
fork, with_store = sys.argv[3] == "fork", sys.argv[4] == "store"
store = dist.TCPStore("127.0.0.1", 0, 1, True) if with_store else dist.HashStore()
dist.init_process_group("gloo", store=store, rank=0, world_size=1)
dist.all_reduce(torch.ones(8))
servers = [_WorkerServer(unix)] if unix != "-" else []
servers += [_WorkerServer("::", 0)] if tcp else []

def stuck_in_a_step():
    time.sleep(600)

child = os.fork() if fork else 0
if child == 0:
    if not fork:
        port = servers[-1].port if tcp else 0
        print(json.dumps({"port": port, "store_port": store.port if with_store else 0}), flush=True)
    stuck_in_a_step()
print(json.dumps({"child": child}), flush=True)
os.waitpid(child, 0)
"""


@dataclass(frozen=True, slots=True)
class TorchWorker:
    pid: int  # the process that runs the server
    port: int  # its TCP server's port (0 without)
    store_port: int  # its TCPStore's port, when it runs one
    child: int  # with fork: the child holding the server's socket (else 0)


@contextmanager
def torch_worker(
    unix: str | None = None, *, tcp: bool = False, fork: bool = False, store: bool = False
) -> Iterator[TorchWorker]:
    """A worker with a server on the Unix socket ``unix``, and one on TCP if ``tcp``."""
    flags = ["tcp" if tcp else "-", "fork" if fork else "-", "store" if store else "-"]
    argv = [sys.executable, "-c", SCRIPT, unix or "-", *flags]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, "the torch worker exited before its server was up"
        ready = json.loads(line)
        yield TorchWorker(
            process.pid, ready.get("port", 0), ready.get("store_port", 0), ready.get("child", 0)
        )
    finally:
        if fork and "ready" in locals() and ready.get("child"):
            subprocess.run(["kill", "-9", str(ready["child"])], check=False)
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
