"""Capture a stuck worker's stack before it is killed: the evidence of *where* it hung.

First choice is the worker's own torch worker server, when it runs one
(``server_stack``: its stack and flight recorder in milliseconds, within half of the
time). Then ``py-spy dump`` (every thread's Python frames, native frames too
where it can unwind them), which needs ptrace rights over the worker. Without
py-spy or those rights, a worker that opted in with ``dump_stack_on`` is asked to
dump its own Python stack through ``faulthandler``. Last, what ``/proc`` shows
(``proc_report``): status, the kernel wait channel of each thread and the kernel stack
where readable. Every path stays within one time budget, so a capture never delays a
kill by more than that, and the /proc report keeps a share of it. A stopped or traced
worker goes straight to the report: py-spy cannot suspend it, and its own signal
handler does not run.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from .. import log_names
from ..engine.capturer import CapturedStack
from ..engine.kernel_state import read_kernel_state
from ..engine.process import ProcessIdentity, ProcessSignaller, identify
from ..safe_dirs import replaceable_by_others
from .bounded_subprocess import run_bounded
from .dump_dirs import DumpDirMaker
from .dump_files import (
    DumpPathError,
    open_dump_for_reading,
    open_dump_for_writing,
    reader_dump_dirs,
    worker_dump_dir,
)
from .proc_report import proc_report
from .server_stack import WORKER_SERVER, ServerStack, stack_from_worker_server
from .worker_privileges import NOT_RUN, as_worker, credentials_of

__all__ = [
    "MAX_STACK_BYTES",
    "DumpPathError",
    "StackCapturer",
    "dump_stack_on",
    "faulthandler_path",
    "py_spy_candidate",
    "py_spy_error",
]

logger = logging.getLogger(log_names.STACK_CAPTURE)

MAX_STACK_BYTES = 256 * 1024
# How long past the budget the helper reading a worker's dump is waited for: it checks
# the budget itself, so this only covers its last steps.
_DUMP_GRACE = 0.1
# The share of a capture's budget kept for the /proc report (at most a quarter of it).
_PROC_RESERVE = 0.25


def faulthandler_path(pid: int, uid: int | None = None) -> Path:
    """Where a worker of ``uid`` that opted in writes its own stack (see
    ``dump_stack_on`` and ``dump_files``): a directory per user, mode 0700, that the
    worker owns, so one user cannot plant files for another."""
    directory, _ = worker_dump_dir(os.getuid() if uid is None else uid)
    return directory / f"{pid}.stack"


# One descriptor per process (a forked child opens its own): faulthandler writes to it
# from its C handler, so it stays open for the life of the process.
_dump_fds: dict[int, int] = {}


def dump_stack_on(signum: int) -> Path:
    """In a worker: dump every thread's Python stack to ``faulthandler_path(pid)`` when
    ``signum`` arrives, so the service gets a stack even without ptrace rights.

    The handler is faulthandler's, in C: it runs even while a thread holds the GIL,
    and it does not stop the worker. It costs one open file. The signal must be one
    the worker does not use for anything else (SIGUSR2 is a common choice).

    Raises ``DumpPathError``, saying what to do, if the dump directory is not this
    user's own or others can write it: it will not write where someone else aims it."""
    pid = os.getpid()
    directory, may_create = worker_dump_dir(os.getuid())
    if pid not in _dump_fds:
        _dump_fds[pid] = open_dump_for_writing(directory, pid, create=may_create)
    faulthandler.register(signum, file=_dump_fds[pid], all_threads=True, chain=False)
    return directory / f"{pid}.stack"


def py_spy_candidate() -> str | None:
    """Where the service looks for py-spy: beside the Python it runs (pyenv's shim on
    PATH would cost a shell start per capture), then on PATH. Not yet trusted."""
    beside_python = Path(sys.executable).with_name("py-spy")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("py-spy")


def _find_py_spy() -> str | None:
    found = py_spy_candidate()
    if found is None:
        return None
    # The service runs it as root, or with CAP_SYS_PTRACE as the worker's user, which
    # can trace root's processes too: one another user could replace is never run.
    why = replaceable_by_others(found)
    if why is not None:
        logger.warning(
            "not running %s for stack captures: another user could replace it (%s); "
            "install py-spy where only root can change it (timer-service doctor checks)",
            found,
            why,
        )
        return None
    return found


def py_spy_error(output: str, returncode: int) -> str:
    """The line that says why py-spy failed, from what it printed.

    py-spy prints ``Error: <what>``, then possibly ``Caused by:`` with numbered
    causes, then (with ``RUST_BACKTRACE`` set) a ``Stack backtrace:`` of numbered
    Rust frames. The last line is a frame such as ``10: main``, which says nothing;
    the ``Error:`` line says what went wrong, and its first cause why.
    """
    lines = [line.strip() for line in output.splitlines()]
    error = next((line for line in lines if line.startswith("Error:")), None)
    if error is None:
        # No "Error:" line (e.g. "Permission Denied: Try running again with elevated
        # permissions ..."): the first line before any backtrace.
        head = []
        for line in lines:
            if line.startswith("Stack backtrace:"):
                break
            head.append(line)
        error = next((line for line in head if line), None)
        return error if error is not None else f"exit code {returncode}"
    after = lines[lines.index(error) + 1 :]
    if "Caused by:" in after:
        causes = after[after.index("Caused by:") + 1 :]
        cause = next((line for line in causes if line), "")
        cause = cause.split(": ", 1)[1] if cause[:1].isdigit() and ": " in cause else cause
        if cause and not cause.startswith("Stack backtrace:") and cause not in error:
            return f"{error} ({cause})"
    return error


class StackCapturer:
    def __init__(
        self,
        budget: float = 2.0,
        *,
        use_py_spy: bool = True,
        use_worker_server: bool = True,
        max_bytes: int = MAX_STACK_BYTES,
        signaller: ProcessSignaller | None = None,
        stack_dir: str | Path | None = None,
    ) -> None:
        self.budget = budget
        self.max_bytes = max_bytes
        self.py_spy = _find_py_spy() if use_py_spy else None
        self.use_worker_server = use_worker_server
        self.signaller = signaller or ProcessSignaller()
        # The service's stack root: it makes <stack_dir>/<uid> for workers (add
        # ``dump_dirs`` as an event listener) and looks there first. The library's
        # servers pass none and only look where workers would have written.
        self.stack_dir = Path(stack_dir) if stack_dir is not None else None
        self.dump_dirs = DumpDirMaker(self.stack_dir) if self.stack_dir is not None else None

    def capture(
        self,
        identity: ProcessIdentity,
        dump_signal: int | None = None,
        *,
        give_up_at: float | None = None,
    ) -> CapturedStack:
        """The best stack to be had by ``give_up_at`` (monotonic; default: the budget
        from now). The /proc report is always there to fall back on."""
        began = time.monotonic()
        give_up_at = began + self.budget if give_up_at is None else give_up_at
        # The /proc report is the evidence of last resort (a stopped rank is named by
        # it): the attempts before it leave it a share of the budget, so a py-spy that
        # runs to its timeout on a loaded host does not leave the rank with nothing.
        attempts_until = give_up_at - min(_PROC_RESERVE, (give_up_at - began) / 4)
        notes: list[str] = []
        state = read_kernel_state(identity.pid)
        stopped = state.describe() if state.stopped else None
        # A stopped worker's server thread does not answer either.
        if self.use_worker_server and stopped is None:
            # At most half of the attempts' time: a server that never answers leaves
            # py-spy the rest.
            asked = stack_from_worker_server(identity, began + (attempts_until - began) / 2)
            if isinstance(asked, ServerStack):
                notes += asked.notes
                return self._done(WORKER_SERVER, asked.text, began, notes, asked.flight_recorder)
            if asked is not None:
                notes.append(asked)
        if self.py_spy is None:
            notes.append("py-spy: not installed or disabled")
        elif stopped is not None:
            # py-spy suspends the worker through ptrace, which a stopped or traced
            # process refuses ("Failed to suspend process"): not worth its budget.
            notes.append(f"py-spy: not run, the worker is {stopped}")
        else:
            # The native unwind reads every library the worker mapped, which the worker
            # chooses (a FIFO would block it): it gets half of what is left, so the
            # Python-only attempt keeps its share.
            for method, extra, share in (
                ("py-spy", ["--native"], 0.5),
                ("py-spy (python only)", [], 1.0),
            ):
                until = time.monotonic() + share * (attempts_until - time.monotonic())
                text, why, how = self._py_spy(identity, extra, until)
                if how:
                    notes.append(f"{method}: {how}")
                if text is not None:
                    return self._done(method, text, began, notes)
                notes.append(f"{method}: {why}")
                if why.startswith(NOT_RUN):
                    break  # the other attempt would not run either
        if dump_signal is not None and stopped is None:
            text, why = self._faulthandler(identity, dump_signal, attempts_until)
            if text is not None:
                return self._done("faulthandler", text, began, notes)
            notes.append(f"faulthandler: {why}")
        return self._done("proc", proc_report(identity.pid, give_up_at), began, notes)

    def _done(
        self,
        method: str,
        text: str,
        began: float,
        notes: list[str],
        flight_recorder: bytes | None = None,
    ) -> CapturedStack:
        encoded = text.encode(errors="replace")
        truncated = len(encoded) > self.max_bytes
        if truncated:
            text = encoded[: self.max_bytes].decode(errors="ignore") + "\n[truncated]\n"
        return CapturedStack(
            method, text, time.monotonic() - began, truncated, tuple(notes), flight_recorder
        )

    def _py_spy(
        self, identity: ProcessIdentity, extra: list[str], give_up_at: float
    ) -> tuple[str | None, str, str]:
        """py-spy's dump, or None and why not; and how it ran, if not as usual."""
        left = give_up_at - time.monotonic()
        if left <= 0.05:
            return None, "no time left in the budget", ""
        worker = credentials_of(identity.pid)
        if (
            worker is None
            or (identity.uid is not None and worker.uid != identity.uid)
            or not identity.matches(identify(identity.pid))
        ):
            return None, "the worker is gone", ""
        assert self.py_spy is not None
        command = as_worker(
            # Full file names: a frame's directory says whether it is the user's own
            # code or a library's (``frames.is_library_file``), which the short names
            # ("threading.py", "train.py") do not.
            [self.py_spy, "dump", "--full-filenames", "--pid", str(identity.pid), *extra],
            identity.pid,
            worker,
        )
        if command.argv is None:
            return None, command.note, ""
        try:
            # Not subprocess.run: its timeout kills py-spy and then waits for it with
            # no bound; this kills py-spy's whole group and never waits long.
            # One byte over the cap is enough to say the stack was truncated; more is
            # only memory, and the worker decides how much (threads, deep stacks).
            result = run_bounded(
                command.argv, timeout=left, env=command.env, limit=self.max_bytes + 1
            )
        except subprocess.TimeoutExpired:
            return None, f"timed out after {left:.2f}s", command.note
        except OSError as error:
            return None, str(error), command.note
        # Stopped for printing more than a stack may hold: what it printed is the stack.
        cut_off = result.truncated and len(result.stdout.encode()) > self.max_bytes
        if result.returncode != 0 and not cut_off:
            return (
                None,
                py_spy_error(result.stderr or result.stdout, result.returncode),
                command.note,
            )
        if not identity.matches(identify(identity.pid)):
            # It exited while py-spy ran, so the pid may name another process now, and
            # what py-spy read may be that process's: not this worker's evidence.
            return None, "the worker exited during the capture", command.note
        return result.stdout, "", command.note

    def _faulthandler(
        self, identity: ProcessIdentity, dump_signal: int, give_up_at: float
    ) -> tuple[str | None, str]:
        """Ask the worker for its own dump, on a helper thread: the files are the
        worker's user's, and should a call on them never return (a FUSE mount planted
        after the check), only the helper waits, never the kill."""
        result: list[tuple[str | None, str]] = []
        helper = threading.Thread(
            target=lambda: result.append(self._own_dump(identity, dump_signal, give_up_at)),
            name="timer-stack-dump",
            daemon=True,
        )
        helper.start()
        helper.join(max(0.0, give_up_at - time.monotonic()) + _DUMP_GRACE)
        if not result:
            return None, "the dump file did not answer within the budget"
        return result[0]

    def _own_dump(
        self, identity: ProcessIdentity, dump_signal: int, give_up_at: float
    ) -> tuple[str | None, str]:
        try:
            process = psutil.Process(identity.pid)
            uid, gid = process.uids().real, process.gids().real
        except psutil.Error:
            return None, "the worker is gone"
        if self.dump_dirs is not None:
            self.dump_dirs.ensure(uid, gid)  # for this user's next workers, if missing
        try:
            # The service may run as root, and the worker's user controls these paths:
            # no link is followed, no open waits (a planted FIFO), and only a regular
            # file of the worker's own user is read, so nothing else is served.
            fd, _ = open_dump_for_reading(
                reader_dump_dirs(uid, self.stack_dir),
                identity.pid,
                uid,
                started_at=identity.create_time or None,
            )
        except DumpPathError as error:
            return None, str(error)
        try:
            before = os.fstat(fd).st_size
            # Signal only the recorded process (pidfd, start time checked), as for a kill.
            if not self.signaller.send(identity, dump_signal).delivered:
                return None, "could not signal the worker"
            while time.monotonic() < give_up_at:
                time.sleep(0.02)
                if os.fstat(fd).st_size > before:
                    time.sleep(0.05)  # let the handler finish writing every thread
                    # Bounded: one byte over the cap says it was truncated.
                    return os.pread(fd, self.max_bytes + 1, before).decode(errors="replace"), ""
        finally:
            os.close(fd)
        return None, "the worker wrote nothing within the budget"
