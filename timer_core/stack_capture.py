"""Capture a stuck worker's stack before it is killed: the evidence of *where* it hung.

First choice is ``py-spy dump`` (every thread's Python frames, native frames too
where it can unwind them), which needs ptrace rights over the worker. Without
py-spy or those rights, a worker that opted in with ``dump_stack_on`` is asked to
dump its own Python stack through ``faulthandler``. Last, what ``/proc`` shows:
status, the kernel wait channel of each thread and the kernel stack where
readable. Every path stays within one time budget, so a capture never delays a
kill by more than that.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from .process import ProcessIdentity, ProcessSignaller, identify

__all__ = [
    "MAX_STACK_BYTES",
    "CapturedStack",
    "StackCapturer",
    "dump_stack_on",
    "faulthandler_path",
    "py_spy_error",
]

MAX_STACK_BYTES = 256 * 1024
_STACK_DIR_ENV = "TIMER_SERVICE_STACK_DIR"


def faulthandler_path(pid: int, uid: int | None = None) -> Path:
    """Where a worker that opted in writes its own stack (see ``dump_stack_on``): a
    directory per user (mode 0700), so one user's workers cannot plant files for
    another's."""
    uid = os.getuid() if uid is None else uid
    base = os.environ.get(_STACK_DIR_ENV) or tempfile.gettempdir()
    return Path(base) / f"timer-stacks-{uid}" / f"{pid}.stack"


_dump_files: dict[int, IO[str]] = {}


def dump_stack_on(signum: int) -> Path:
    """In a worker: dump every thread's Python stack to ``faulthandler_path(pid)`` when
    ``signum`` arrives, so the service gets a stack even without ptrace rights.

    The handler is faulthandler's, in C: it runs even while a thread holds the GIL,
    and it does not stop the worker. It costs one open file. The signal must be one
    the worker does not use for anything else (SIGUSR2 is a common choice)."""
    pid = os.getpid()
    path = faulthandler_path(pid)
    if pid not in _dump_files:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _dump_files[pid] = open(path, "a")  # noqa: SIM115 - must outlive this call
    faulthandler.register(signum, file=_dump_files[pid], all_threads=True, chain=False)
    return path


@dataclass(frozen=True, slots=True)
class CapturedStack:
    method: str  # "py-spy", "py-spy (python only)", "faulthandler" or "proc"
    text: str
    seconds: float
    truncated: bool = False
    # Why better methods were passed over, e.g. "py-spy: permission denied".
    notes: tuple[str, ...] = ()


def _find_py_spy() -> str | None:
    beside_python = Path(sys.executable).with_name("py-spy")
    if beside_python.exists():
        return str(beside_python)  # pyenv's shim would cost a shell start per capture
    return shutil.which("py-spy")


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
        max_bytes: int = MAX_STACK_BYTES,
        signaller: ProcessSignaller | None = None,
    ) -> None:
        self.budget = budget
        self.max_bytes = max_bytes
        self.py_spy = _find_py_spy() if use_py_spy else None
        self.signaller = signaller or ProcessSignaller()

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
        notes: list[str] = []
        if self.py_spy is None:
            notes.append("py-spy: not installed or disabled")
        else:
            for method, extra in (("py-spy", ["--native"]), ("py-spy (python only)", [])):
                text, why = self._py_spy(identity, extra, give_up_at)
                if text is not None:
                    return self._done(method, text, began, notes)
                notes.append(f"{method}: {why}")
        if dump_signal is not None:
            text, why = self._faulthandler(identity, dump_signal, give_up_at)
            if text is not None:
                return self._done("faulthandler", text, began, notes)
            notes.append(f"faulthandler: {why}")
        return self._done("proc", _proc_report(identity.pid), began, notes)

    def _done(self, method: str, text: str, began: float, notes: list[str]) -> CapturedStack:
        encoded = text.encode(errors="replace")
        truncated = len(encoded) > self.max_bytes
        if truncated:
            text = encoded[: self.max_bytes].decode(errors="ignore") + "\n[truncated]\n"
        return CapturedStack(method, text, time.monotonic() - began, truncated, tuple(notes))

    def _py_spy(
        self, identity: ProcessIdentity, extra: list[str], give_up_at: float
    ) -> tuple[str | None, str]:
        left = give_up_at - time.monotonic()
        if left <= 0.05:
            return None, "no time left in the budget"
        if not identity.matches(identify(identity.pid)):
            return None, "the worker is gone"
        assert self.py_spy is not None
        command = [self.py_spy, "dump", "--pid", str(identity.pid), *extra]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {left:.2f}s"
        except OSError as error:
            return None, str(error)
        if result.returncode != 0:
            return None, py_spy_error(result.stderr or result.stdout, result.returncode)
        return result.stdout, ""

    def _faulthandler(
        self, identity: ProcessIdentity, dump_signal: int, give_up_at: float
    ) -> tuple[str | None, str]:
        try:
            uid = psutil.Process(identity.pid).uids().real
        except psutil.Error:
            return None, "the worker is gone"
        path = faulthandler_path(identity.pid, uid)
        try:
            # Never follow a link, and only read a file the worker's own user owns:
            # the service may run as root, and a planted link must not make it
            # read (and serve) some other file.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None, f"the worker has no dump file at {path}"
        with os.fdopen(fd, "rb") as dump:
            status = os.fstat(dump.fileno())
            if status.st_uid != uid or not stat.S_ISREG(status.st_mode):
                return None, f"{path} is not a file of the worker's user"
            before = status.st_size
            # Signal only the recorded process (pidfd, start time checked), as for a kill.
            if not self.signaller.send(identity, dump_signal).delivered:
                return None, "could not signal the worker"
            while time.monotonic() < give_up_at:
                time.sleep(0.02)
                if os.fstat(dump.fileno()).st_size > before:
                    time.sleep(0.05)  # let the handler finish writing every thread
                    dump.seek(before)
                    return dump.read(self.max_bytes + 1).decode(errors="replace"), ""
        return None, "the worker wrote nothing within the budget"


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as handle:
            return handle.read().strip()
    except OSError as error:
        return f"(unreadable: {error.strerror})"


def _proc_report(pid: int) -> str:
    """What the kernel shows of a process: enough to tell a futex wait from an NFS hang."""
    lines = [f"/proc/{pid}/status:", _read(f"/proc/{pid}/status"), ""]
    lines += [f"/proc/{pid}/stack (kernel stack; needs root):", _read(f"/proc/{pid}/stack"), ""]
    lines.append("threads (tid, name, state, kernel wait channel):")
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as error:
        tids = []
        lines.append(f"(unreadable: {error.strerror})")
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        state = next(
            (line for line in _read(f"{base}/status").splitlines() if line.startswith("State:")),
            "State: ?",
        )
        lines.append(
            f"  {tid} {_read(f'{base}/comm')} {state[6:].strip()} {_read(f'{base}/wchan')}"
        )
    return "\n".join(lines) + "\n"
