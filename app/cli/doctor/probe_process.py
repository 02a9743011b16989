"""A short-lived test worker for the checks that must read a real process (py-spy,
torch's worker server): started, waited for until it says ``ready``, and killed with
its whole group when the check is done, whatever happened.

A test worker the check could not end (its thread timed out) is killed when doctor
exits: doctor leaves no process behind.

Every test worker runs in ``/``, never in doctor's working directory: ``python -c``
puts its working directory first on ``sys.path``, and root runs doctor from wherever
the operator stands (``/tmp``, a user's home): a ``timer_core/`` or ``torch.py``
another user left there would have run as root in the worker server's test worker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence

__all__ = ["PROBE_FUNCTION", "READY", "ProbeStartError", "probe_process", "sleeping_python"]

READY = "ready"
# The test worker's own function: py-spy's dump of it must name it.
PROBE_FUNCTION = "timer_service_doctor_probe"

_live: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()


class ProbeStartError(RuntimeError):
    """The test worker exited or said nothing in time; the message has its last words."""


def sleeping_python(python: str, setup: str = "") -> list[str]:
    """A Python test worker that runs ``setup``, says ready, and sleeps in a function
    named ``PROBE_FUNCTION`` (so a dump of it can be recognised)."""
    code = (
        f"{setup}\n"
        "import time\n"
        f"def {PROBE_FUNCTION}():\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n"
        f"{PROBE_FUNCTION}()\n"
    )
    return [python, "-c", code]


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(1.0)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    with _lock:
        _live.discard(process)


@atexit.register
def _kill_left_behind() -> None:
    with _lock:
        left = list(_live)
    for process in left:
        _kill(process)


def _wait_ready(process: subprocess.Popen[bytes], within: float) -> None:
    assert process.stdout is not None and process.stderr is not None
    deadline = time.monotonic() + within
    said = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while READY.encode() not in said:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeStartError(f"the test worker did not start within {within:g} s")
            if not selector.select(left):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            said += chunk
    if READY.encode() in said:
        return
    # It closed its output without saying ready: ended first, so that reading what it
    # said on stderr cannot wait on a process that lives on.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(1.0)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    # Its last line says why (a missing module, torch's own error).
    error = process.stderr.read(65536).decode(errors="replace").strip().splitlines()
    raise ProbeStartError(
        error[-1] if error else f"the test worker exited with code {process.returncode}"
    )


@contextlib.contextmanager
def probe_process(
    argv: Sequence[str],
    *,
    start_within: float,
    env: dict[str, str] | None = None,
    user: tuple[int, int] | None = None,
) -> Iterator[int]:
    """Run ``argv`` (as ``user``, a (uid, gid) with no other groups, if given) until the
    block ends, and yield its pid once it printed ``ready``; ``ProbeStartError`` if it
    did not within ``start_within`` seconds."""
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        # Not doctor's working directory: python -c imports from it first (see above),
        # and another user may not reach it.
        cwd="/",
        # Its own group: killpg ends it and anything it started, and doctor's own
        # group (a terminal's Ctrl-C) is not its.
        start_new_session=True,
        user=None if user is None else user[0],
        group=None if user is None else user[1],
        extra_groups=None if user is None else [],
    )
    with _lock:
        _live.add(process)
    try:
        _wait_ready(process, start_within)
        yield process.pid
    finally:
        _kill(process)
