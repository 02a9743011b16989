"""Run a helper program (py-spy) for at most a given time, and leave nothing behind.

``subprocess.run(timeout=...)`` kills only the child it started, and then waits for
it with no bound. A helper that cannot die at once (ptrace-attached to a worker in an
uninterruptible kernel wait, state ``D``), or a grandchild that keeps its pipes open,
would then hold the capture, and a kill waiting on it, for as long as it likes.

Here the helper leads a process group of its own. At the timeout the whole group gets
SIGKILL, the pipes are closed, and the helper is waited for at most ``_REAP_WAIT``;
one that has still not died is reaped by a background thread, never by the caller.

What it prints is bounded too: ``communicate`` keeps all of it, and a helper's output
is the worker's to shape (py-spy prints a line per frame of every thread the worker
made; once, the worker's own program ran as "py-spy" in its namespace and wrote
``/dev/zero`` into the root service's memory, 565 MB in a second). Each stream is read
up to its limit; past it the group is killed and the output is marked truncated.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

__all__ = ["DEFAULT_LIMIT", "Finished", "run_bounded"]

# How long the caller waits for a SIGKILLed helper to be reaped before leaving it to a
# background thread. SIGKILL takes effect at once unless the helper is inside a kernel
# wait that ignores signals, which is exactly the case not to wait for.
_REAP_WAIT = 0.5
# How much of each stream is kept unless the caller says otherwise: py-spy's error
# lines, and a dump of a few thousand threads.
DEFAULT_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int  # -SIGKILL when ``truncated``: it was killed for printing too much
    stdout: str
    stderr: str
    truncated: bool = False  # a stream passed its limit; what was read up to it is here


def run_bounded(
    argv: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
) -> Finished:
    """Run ``argv`` (in ``env``, default this process's environment) and return its
    output, or raise ``subprocess.TimeoutExpired`` after ``timeout`` seconds (plus at
    most ``_REAP_WAIT``), its process group killed. At most ``limit`` bytes of each
    stream are kept: past that its group is killed and ``truncated`` says so.
    ``OSError`` if it cannot be started (e.g. no descriptor left for its pipes)."""
    deadline = time.monotonic() + timeout
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Its own session and group: killpg reaches every process it started, and a
        # signal meant for the service's group never reaches it.
        start_new_session=True,
    )
    try:
        output, truncated = _read_until(process, deadline, limit, timeout)
        if not truncated:
            # Both pipes are at their end, but the helper may live on without them.
            process.wait(max(0.0, deadline - time.monotonic()))
    except BaseException:
        kill_group(process)
        raise
    # Closes the pipes; past the limit, it also stops the helper and its group.
    kill_group(process)
    stdout, stderr = (bytes(output[index]).decode(errors="replace") for index in (1, 2))
    # Not reaped within _REAP_WAIT (a kernel wait): it was sent SIGKILL all the same.
    returncode = -signal.SIGKILL if process.returncode is None else process.returncode
    return Finished(returncode, stdout, stderr, truncated)


def _read_until(
    process: subprocess.Popen[bytes], deadline: float, limit: int, timeout: float
) -> tuple[dict[int, bytearray], bool]:
    """Both pipes read to their end (by stream number, 1 and 2), or up to ``limit``
    bytes of one of them (then True). ``TimeoutExpired`` at ``deadline``."""
    assert process.stdout is not None and process.stderr is not None
    output = {1: bytearray(), 2: bytearray()}
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, 1)
        selector.register(process.stderr, selectors.EVENT_READ, 2)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(process.args, timeout)
            for key, _ in selector.select(left):
                # Readable: one read returns what is there without waiting.
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                kept = output[key.data]
                room = limit - len(kept)
                kept += chunk[:room]
                if len(chunk) > room:
                    return output, True
    return output, False


def kill_group(process: subprocess.Popen[bytes]) -> None:
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
