"""Worker processes for the integration tests: real processes that really get killed."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import timer_core as timer
from timer_core.diagnosis.stack_capture import StackCapturer

SLEEPER = "import time\nwhile True: time.sleep(1)"


def spawn_sleeper(code: str = SLEEPER) -> subprocess.Popen[bytes]:
    """A child that sleeps until signalled."""
    return subprocess.Popen([sys.executable, "-c", code])


def wait_dead(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def assert_sigkilled(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """The process dies of SIGKILL within ``timeout``; it is reaped either way."""
    try:
        assert wait_dead(process, timeout) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()


def hold_local_timer(mp_queue: Any, after: float, scope: str, release: bool) -> None:
    """Acquire a timer over the mp queue, then hang (or finish and linger)."""
    timer.configure(timer.LocalTimerClient(mp_queue))
    if release:
        with timer.expires(after=after, scope=scope):
            pass
        time.sleep(60)
    else:
        with timer.expires(after=after, scope=scope):
            time.sleep(60)


def ignore_sigterm_forever() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    while True:
        time.sleep(1)


def hold_torch_local_timer(mp_queue: Any, after: float) -> None:
    """A worker using torch's own LocalTimerClient against our server."""
    # torch's timer package is untyped and does not re-export its names for mypy.
    torch_timer: Any = importlib.import_module("torch.distributed.elastic.timer")
    torch_timer.configure(torch_timer.LocalTimerClient(mp_queue))
    with torch_timer.expires(after=after):
        time.sleep(60)


# The stuck worker's own function: what a captured stack of it must name.
FUNCTION = "stuck_in_a_distinctively_named_function"
needs_py_spy = pytest.mark.skipif(
    StackCapturer().py_spy is None, reason="py-spy is not installed (pip install py-spy)"
)

STUCK_WORKER = """
import signal, sys, time
import timer_core as timer

def stuck_in_a_distinctively_named_function():
    while True:
        time.sleep(0.05)

mode = sys.argv[1]
if mode == "http":
    dump = signal.SIGUSR2 if sys.argv[3] == "dump" else None
    timer.configure(timer.HttpTimerClient(sys.argv[2], dump_stack_on=dump))
    with timer.expires(after=float(sys.argv[4]), scope="stuck-step"):
        stuck_in_a_distinctively_named_function()
elif mode == "dump-ready":
    from timer_core.diagnosis.stack_capture import dump_stack_on
    dump_stack_on(signal.SIGUSR2)
    print("ready", flush=True)
    stuck_in_a_distinctively_named_function()
else:
    print("ready", flush=True)
    stuck_in_a_distinctively_named_function()
"""


def spawn_stuck(*args: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
    """A worker hung in ``stuck_in_a_distinctively_named_function``."""
    return subprocess.Popen([sys.executable, "-c", STUCK_WORKER, *args], stdout=stdout)


@contextmanager
def stuck_worker(mode: str) -> Iterator[subprocess.Popen[bytes]]:
    """``spawn_stuck(mode)`` once it says it is ready (``plain`` or ``dump-ready``);
    killed and reaped afterwards."""
    worker = spawn_stuck(mode, stdout=subprocess.PIPE)
    assert worker.stdout is not None
    try:
        assert worker.stdout.readline().strip() == b"ready"
        yield worker
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()


def main() -> None:
    if sys.argv[1:] == ["ignore-sigterm"]:
        ignore_sigterm_forever()
    elif sys.argv[1] == "parent-of-sleeper":
        child = spawn_sleeper()
        print(child.pid, flush=True)
        while True:
            time.sleep(1)
    else:
        raise SystemExit(f"unknown worker mode {sys.argv[1:]}; pid {os.getpid()}")


if __name__ == "__main__":
    main()
