"""Process identity and safe signalling.

A pid alone is not a process: pids are reused. A worker is identified by its
pid plus its start time, read when the timer is acquired, and a signal is sent
only through a pidfd opened on a process whose start time still matches, so a
reused pid is never hit.
"""

from __future__ import annotations

import errno
import os
import signal as signal_module
import threading
from dataclasses import dataclass, field

import psutil

from .labels import NO_LABELS, Labels
from .request_text import shown

__all__ = [
    "ProcessIdentity",
    "ProcessSignaller",
    "SignalOutcome",
    "identify",
    "is_own_thread",
    "protected_pids",
    "signal_name",
    "status_numbers",
]

# psutil derives start times from clock ticks; two reads of one process agree
# to far better than this, while a reused pid starts at least one tick later.
_CREATE_TIME_TOLERANCE = 1e-3
# Linux caps pid_max at 2**22; anything above cannot be a process.
_PID_MAX = 2**22


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    pid: int
    create_time: float
    # The real uid, read with the identity: who owns the process decides who may arm,
    # release or read a timer on it. Not part of the identity itself.
    uid: int | None = field(default=None, compare=False)
    # Which rank of which job it is, read from its environment once, when it is first
    # armed for (after the check that the caller may act on it). Not part of the
    # identity either.
    labels: Labels = field(default=NO_LABELS, compare=False)

    def matches(self, other: ProcessIdentity | None) -> bool:
        return (
            other is not None
            and other.pid == self.pid
            and abs(other.create_time - self.create_time) < _CREATE_TIME_TOLERANCE
        )


def identify(pid: int) -> ProcessIdentity | None:
    """The identity of the live process with this pid, or None: gone, a zombie, or
    not a process but a thread (``kill(tid)`` would signal the thread's whole process,
    whatever pid that has)."""
    if pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        with process.oneshot():  # one read of /proc/PID/stat for both
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            create_time = process.create_time()
        owner = _leader_and_uid(pid)
        if owner is None or owner[0] != pid:
            return None
        return ProcessIdentity(pid, create_time, owner[1])
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        # Another user's process: identity is still readable from /proc on Linux,
        # but if not, fall back to "unknown", which is never signalled.
        return None


def _leader_and_uid(pid: int) -> tuple[int, int] | None:
    """``(Tgid, real uid)`` from ``/proc/PID/status``: the process a thread id belongs
    to, and who owns it."""
    found = status_numbers(pid, b"Tgid", b"Uid")
    return (found[0], found[1]) if found is not None else None


def status_numbers(pid: int, *names: bytes) -> tuple[int, ...] | None:
    """The first number on each of the lines ``names`` (e.g. ``b"Uid"``, the real uid)
    of ``/proc/PID/status``, in that order; None if it cannot be read or lacks one."""
    found: dict[bytes, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                key = line.split(b":", 1)[0]
                if key in names:
                    found[key] = int(line.split()[1])
                    if len(found) == len(names):
                        break
    except (OSError, ValueError, IndexError):
        return None
    return tuple(found[name] for name in names) if len(found) == len(names) else None


def is_own_thread(pid: int) -> bool:
    """Whether ``pid`` is the id of one of this process's Python threads (threads come
    and go, so this is asked each time; other threads' ids are no process at all, and
    ``identify`` refuses them)."""
    return pid != os.getpid() and any(t.native_id == pid for t in threading.enumerate())


def protected_pids() -> frozenset[int]:
    """This process and its ancestors: a watchdog must never signal them."""
    me = psutil.Process()
    return frozenset({me.pid, *(parent.pid for parent in me.parents())})


def signal_name(signum: int) -> str:
    """``9 (SIGKILL)``; a number alone when the system has no name for it."""
    try:
        return f"{signum} ({signal_module.Signals(signum).name})"
    except ValueError:
        return str(signum)


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    delivered: bool
    # "gone" when the process no longer exists (or is another process now),
    # "failed" when it exists but the signal could not be sent.
    status: str
    reason: str


class ProcessSignaller:
    """Sends signals only to the exact process recorded, never to a protected pid."""

    def __init__(self, protected: frozenset[int] | None = None) -> None:
        self.protected = protected if protected is not None else protected_pids()

    def refusal(self, pid: int) -> str | None:
        """Why a request naming this pid must be refused, or None if it may be armed."""
        if isinstance(pid, bool) or not isinstance(pid, int):
            return f"pid must be an integer, got {type(pid).__name__}"
        if pid > _PID_MAX:
            return f"pid {shown(pid)} is out of range (max {_PID_MAX})"
        if pid < 0:
            return f"pid {shown(pid)} is negative, which would name a process group"
        if pid <= 1:
            return f"pid {pid} names init or every process"
        if pid in self.protected:
            return f"pid {pid} is the timer server itself or one of its ancestors"
        if is_own_thread(pid):
            # A thread id is a valid pid for kill(2), which then hits the whole server.
            return f"pid {pid} is a thread of the timer server"
        return None

    def send(self, identity: ProcessIdentity, signum: int) -> SignalOutcome:
        refusal = self.refusal(identity.pid)
        if refusal is not None:
            return SignalOutcome(False, "failed", refusal)
        try:
            pidfd = os.pidfd_open(identity.pid)
        except ProcessLookupError:
            return SignalOutcome(False, "gone", "no such process")
        except OSError as error:
            return SignalOutcome(False, "failed", f"pidfd_open: {os.strerror(error.errno or 0)}")
        try:
            # Checked after the pidfd is open: the fd pins this exact process,
            # so if the identity matches now, the signal reaches the right one.
            if not identity.matches(identify(identity.pid)):
                return SignalOutcome(False, "gone", "pid now names another process or none")
            signal_module.pidfd_send_signal(pidfd, signum)
            return SignalOutcome(True, "delivered", "")
        except ProcessLookupError:
            return SignalOutcome(False, "gone", "process exited before the signal")
        except PermissionError:
            return SignalOutcome(False, "failed", "permission denied (EPERM)")
        except OSError as error:
            if error.errno == errno.ESRCH:
                return SignalOutcome(False, "gone", "process exited before the signal")
            return SignalOutcome(False, "failed", os.strerror(error.errno or 0))
        finally:
            os.close(pidfd)

    def children(self, identity: ProcessIdentity) -> list[ProcessIdentity]:
        """The worker's live descendants, read before the worker is signalled."""
        try:
            process = psutil.Process(identity.pid)
            if not identity.matches(ProcessIdentity(identity.pid, process.create_time())):
                return []
            found = []
            for child in process.children(recursive=True):
                try:
                    found.append(ProcessIdentity(child.pid, child.create_time()))
                except psutil.Error:
                    continue
            return [child for child in found if self.refusal(child.pid) is None]
        except psutil.Error:
            return []
