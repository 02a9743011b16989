"""Run a helper program (py-spy) for at most a given time, and leave nothing behind.

``subprocess.run(timeout=...)`` kills only the child it started, and then waits for
it with no bound. A helper that cannot die at once (ptrace-attached to a worker in an
uninterruptible kernel wait, state ``D``), or a grandchild that keeps its pipes open,
would then hold the capture, and a kill waiting on it, for as long as it likes.

Here the helper leads a process group of its own. At the timeout the whole group gets
SIGKILL, the pipes are closed, and the helper is waited for at most ``_REAP_WAIT``;
one that has still not died is reaped by a background thread, never by the caller.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from dataclasses import dataclass

__all__ = ["Finished", "run_bounded"]

# How long the caller waits for a SIGKILLed helper to be reaped before leaving it to a
# background thread. SIGKILL takes effect at once unless the helper is inside a kernel
# wait that ignores signals, which is exactly the case not to wait for.
_REAP_WAIT = 0.5


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


def run_bounded(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> Finished:
    """Run ``argv`` (in ``env``, default this process's environment) and return its
    output, or raise ``subprocess.TimeoutExpired`` after ``timeout`` seconds (plus at
    most ``_REAP_WAIT``), its process group killed. ``OSError`` if it cannot be started
    (e.g. no descriptor left for its pipes)."""
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        # Its own session and group: killpg reaches every process it started, and a
        # signal meant for the service's group never reaches it.
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        kill_group(process)
        raise
    return Finished(process.returncode, stdout, stderr)


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL ``process``'s group, close its pipes and reap it within ``_REAP_WAIT``
    (else in the background). Only while ``process`` is unreaped: its pid, and so its
    group's id, cannot have been reused until then."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        process.wait(_REAP_WAIT)
    except subprocess.TimeoutExpired:
        # Still in an uninterruptible wait: it dies when the kernel lets it. A thread
        # reaps it then, so it leaves no zombie, and nothing here waits for it.
        threading.Thread(target=process.wait, name="timer-reap-helper", daemon=True).start()
