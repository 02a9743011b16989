"""Interop with torch 2.13's real timer clients and servers (skipped without torch)."""

from __future__ import annotations

import inspect
import multiprocessing as mp
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import timer_core
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, hold_torch_local_timer

torch_timer = pytest.importorskip("torch.distributed.elastic.timer")

pytestmark = pytest.mark.torch


def run_python(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)])


def test_every_public_torch_name_exists_with_a_compatible_signature() -> None:
    public = [name for name in dir(torch_timer) if not name.startswith("_")]
    for module_name in ("api", "local_timer", "file_based_local_timer", "debug_info_logging"):
        torch_module = getattr(torch_timer, module_name)
        ours = getattr(timer_core, module_name)
        assert set(torch_module.__all__) <= set(ours.__all__), module_name
    for name in public:
        if name in ("api", "local_timer", "file_based_local_timer", "debug_info_logging"):
            continue
        assert hasattr(timer_core, name), name
        theirs, mine = getattr(torch_timer, name), getattr(timer_core, name)
        if not callable(theirs):
            continue
        their_params = list(inspect.signature(theirs).parameters.values())
        my_params = list(inspect.signature(mine).parameters.values())
        assert [(p.name, p.default, p.kind) for p in their_params] == [
            (p.name, p.default, p.kind) for p in my_params[: len(their_params)]
        ], name
        assert all(p.kind == p.KEYWORD_ONLY for p in my_params[len(their_params) :]), name
    assert issubclass(timer_core.LocalTimerServer, timer_core.TimerServer)


@contextmanager
def our_file_timer_server(tmp_path: Path) -> Iterator[tuple[timer_core.FileTimerServer, str]]:
    """Our FileTimerServer, running on a FIFO in ``tmp_path``, and the FIFO's path."""
    fifo = str(tmp_path / "timers.fifo")
    server = timer_core.FileTimerServer(fifo, "interop")
    server.start()
    try:
        yield server, fifo
    finally:
        server.stop()


def test_torch_file_timer_client_worker_is_killed_by_our_server(tmp_path: Path) -> None:
    with our_file_timer_server(tmp_path) as (_, fifo):
        worker = run_python(f"""
            import time
            from torch.distributed.elastic import timer
            timer.configure(timer.FileTimerClient({fifo!r}))
            with timer.expires(after=0.5):
                time.sleep(60)
        """)
        assert_sigkilled(worker, 60)


def test_torch_file_timer_client_release_spares_the_worker(tmp_path: Path) -> None:
    with our_file_timer_server(tmp_path) as (server, fifo):
        worker = run_python(f"""
            import time
            from torch.distributed.elastic import timer
            timer.configure(timer.FileTimerClient({fifo!r}))
            with timer.expires(after=0.5):
                pass
            time.sleep(1.5)
        """)
        assert worker.wait(60) == 0
        assert server._request_count == 2


def test_our_file_timer_client_worker_is_killed_by_torchs_server(tmp_path: Path) -> None:
    # torch's server SIGKILLs its own process after a reap, so it runs in a child.
    fifo = str(tmp_path / "timers.fifo")
    server = run_python(f"""
        import time
        from torch.distributed.elastic.timer import FileTimerServer
        server = FileTimerServer({fifo!r}, "interop", max_interval=0.1)
        server.start()
        time.sleep(60)
    """)
    try:
        wait_until(Path(fifo).exists, timeout=30)
        worker = run_python(f"""
            import time
            import timer_core as timer
            timer.configure(timer.FileTimerClient({fifo!r}))
            with timer.expires(after=0.5):
                time.sleep(60)
        """)
        assert_sigkilled(worker, 60)
        # The torch bug we do not share: its server killed itself too.
        assert server.wait(30) == -signal.SIGKILL
    finally:
        server.kill()
        server.wait()


def test_torch_local_timer_client_worker_is_killed_by_our_local_server() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    server = timer_core.LocalTimerServer(queue, max_interval=0.1)
    server.start()
    worker = ctx.Process(target=hold_torch_local_timer, args=(queue, 0.5))
    try:
        worker.start()
        worker.join(60)
        assert worker.exitcode == -signal.SIGKILL
    finally:
        worker.kill()
        worker.join()
        server.stop()
