"""Per-user FIFOs (``--fifo-dir``): torch's FileTimerClient for jobs that do not run as
the service's user, without letting one user touch another's processes.

Each uid writes torch's JSON lines into its own FIFO (see ``fifo_dir``). A request read
from uid U's FIFO may only target a process whose real uid is U: the uid is read from
``/proc`` when the request is applied, and the engine checks it again against the
identity it records. Anything else is refused with a ``refused`` event naming the FIFO,
and never signals. Root's FIFO, and the service's own uid's, may target what the shared
``--fifo`` may.

One thread reads every FIFO through epoll. Each round gives every FIFO with data one
read of at most ``READ_BUDGET`` bytes, so a flood on one user's FIFO costs the others
one bounded read per round, never their turn.

With ``may_read``, no round starts while it says no (the service: while its recorder
is behind): requests wait in the pipes and their writers, and at most one round
(``READ_BUDGET`` per FIFO) goes past it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from .. import log_names
from ..engine import Reaper
from ..engine.admission import not_own_process
from ..engine.arm_request import ArmRequest, Origin
from ..engine.poll_thread import PollThread
from .fifo_dir import FifoDirectory, FifoDirError, UserFifo
from .fifo_lines import FifoLines, MalformedLines
from .fifo_source import PAUSE_POLL_SECONDS

__all__ = ["READ_BUDGET", "UserFifos", "real_uid"]

logger = logging.getLogger(log_names.USER_FIFOS)

# Bytes read from one FIFO per turn: about 150 requests, a few ms of engine work.
READ_BUDGET = 16 * 1024
# How often the reader checks that each DIR/<uid> still is the FIFO it reads: one
# lstat per FIFO (torch's own FileTimerServer deletes the path it is given).
_VERIFY_SECONDS = 1.0
# Reads of a replaced FIFO before it is closed: more than its pipe holds.
_DRAIN_READS = 32


def real_uid(pid: int) -> int | None:
    """The real uid of a live process, read from /proc now; None if there is none."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class _Channel:
    """One uid's FIFO as the reader sees it: its descriptors and its line state."""

    def __init__(self, fifo: UserFifo, owner_uid: int | None, malformed: MalformedLines) -> None:
        self.fifo = fifo
        requester = f"the FIFO {fifo.path} of uid {fifo.uid}"
        # owner_uid None: root's (or the service's own) FIFO, as free as the shared --fifo.
        self.origin = Origin("fifo", owner_uid, requester)
        self.lines = FifoLines(f"line on {requester}", malformed)


class UserFifos:
    def __init__(
        self,
        directory: FifoDirectory,
        reaper: Reaper,
        *,
        read_uid: Callable[[int], int | None] = real_uid,
        on_malformed: Callable[[str], None] | None = None,
        unrestricted_uids: frozenset[int] | None = None,
        may_read: Callable[[], bool] | None = None,
    ) -> None:
        self.directory = directory
        self._may_read = may_read
        self.reaper = reaper
        self.malformed = MalformedLines(logger, on_malformed)
        self.applied_requests = 0
        self.refused_requests = 0
        self._read_uid = read_uid
        # Root and the service's own uid may target anything, as on the shared FIFO.
        self._unrestricted = (
            frozenset({0, os.geteuid()}) if unrestricted_uids is None else unrestricted_uids
        )
        # Held while FIFOs are added, replaced or read: an HTTP thread making a FIFO
        # never closes a descriptor the reader is in the middle of.
        self._lock = threading.Lock()
        self._by_uid: dict[int, _Channel] = {}
        self._by_fd: dict[int, _Channel] = {}
        # The uids whose FIFO cannot be made again now, and why (for /healthz).
        self.problems: dict[int, str] = {}
        # Times a FIFO was made again after it was deleted or replaced.
        self.restorations = 0
        self._loop = PollThread("timer-user-fifos")

    # ---- the set of FIFOs ----------------------------------------------------------------

    def ensure(self, uid: int) -> tuple[str, bool]:
        """The path of ``uid``'s FIFO, made (or made anew, if what is on disk is not
        it any more) when needed; and whether it was made now."""
        with self._lock:
            channel = self._by_uid.get(uid)
            why = None if channel is None else self.directory.change(channel.fifo)
            if channel is not None and why is None:
                return channel.fifo.path, False
            if channel is not None:
                # Not the FIFO we read any more: a FIFO there now is someone else's
                # (torch's FileTimerServer makes one), never to be shared with them.
                self.directory.discard(uid)
            fifo, made = self.directory.open(uid)
            if channel is not None:
                logger.warning("the FIFO %s %s: made it again", fifo.path, why)
                self.restorations += 1
                self._drop_locked(channel)
            self._add_locked(fifo)
            self.problems.pop(uid, None)
            return fifo.path, made

    def uids(self) -> list[int]:
        with self._lock:
            return sorted(self._by_uid)

    def verify(self) -> None:
        """Make anew every FIFO whose name no longer leads to the one being read."""
        for uid in self.uids():
            try:
                self.ensure(uid)
            except (FifoDirError, OSError) as error:
                problem = f"the FIFO of uid {uid} in {self.directory.path} is not served: {error}"
                if self.problems.get(uid) != problem:  # once, not every round
                    logger.error("%s", problem)
                self.problems[uid] = problem

    def _add_locked(self, fifo: UserFifo) -> None:
        owner = None if fifo.uid in self._unrestricted else fifo.uid
        channel = _Channel(fifo, owner, self.malformed)
        self._by_uid[fifo.uid] = channel
        self._by_fd[fifo.read_fd] = channel
        self._loop.register(fifo.read_fd)

    def _drop_locked(self, channel: _Channel) -> None:
        # What writers already put in the old FIFO still counts. Its name is gone, so
        # only writers that still hold it open can add more: read a bounded amount.
        for _ in range(_DRAIN_READS):
            if not self._read_once(channel):
                break
        with contextlib.suppress(KeyError, OSError):
            self._loop.unregister(channel.fifo.read_fd)
        del self._by_fd[channel.fifo.read_fd]
        del self._by_uid[channel.fifo.uid]
        channel.fifo.close()

    # ---- reading -------------------------------------------------------------------------

    def start(self, uids: Iterable[int] = ()) -> None:
        """Make the FIFOs of ``uids`` (errors raise), take over those an earlier run
        left in the directory (errors are logged), and start reading."""
        for uid in uids:
            self.ensure(uid)
        for uid in self.directory.uids():
            if uid not in self._by_uid:
                try:
                    self.ensure(uid)
                except (FifoDirError, OSError) as error:
                    logger.error("skipping the FIFO of uid %d: %s", uid, error)
        self._loop.start(self._run)

    def stop(self) -> None:
        """Stop reading. The FIFOs stay on disk, so clients keep their paths across a
        restart (with no reader, their non-blocking open fails at once)."""
        self._loop.stop()
        with self._lock:
            for channel in self._by_uid.values():
                channel.fifo.close()
            self._by_uid.clear()
            self._by_fd.clear()
        self._loop.close()
        self.directory.close()

    def poll_once(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds (None: forever) for data, then give each FIFO
        that has some one read of at most ``READ_BUDGET`` bytes. Returns how many bytes
        were read in all. While ``may_read`` says no, only waits (for stop() or a short
        while) and reads nothing."""
        if self._may_read is not None and not self._may_read():
            pause = PAUSE_POLL_SECONDS if timeout is None else min(timeout, PAUSE_POLL_SECONDS)
            self._loop.sleep(pause)
            return 0
        ready = self._loop.poll(timeout)
        total = 0
        with self._lock:
            for fd in ready:
                channel = self._by_fd.get(fd)
                if channel is not None:
                    total += self._read_once(channel)
        return total

    def _read_once(self, channel: _Channel) -> int:
        try:
            chunk = os.read(channel.fifo.read_fd, READ_BUDGET)
        except BlockingIOError:
            return 0
        for request in channel.lines.requests(chunk):
            self._apply(channel.origin, request)
        return len(chunk)

    def _run(self) -> None:
        next_check = time.monotonic() + _VERIFY_SECONDS
        while not self._loop.stopping:
            try:
                self.poll_once(max(0.0, next_check - time.monotonic()))
                if time.monotonic() >= next_check:
                    self.verify()
                    next_check = time.monotonic() + _VERIFY_SECONDS
            except Exception:
                logger.exception("error reading the per-user FIFOs in %s", self.directory.path)

    # ---- one request ---------------------------------------------------------------------

    @property
    def malformed_lines(self) -> int:
        return self.malformed.count

    def _apply(self, origin: Origin, request: ArmRequest) -> None:
        owner = origin.owner_uid
        allowed = owner is None or request.is_release or self._owns(origin, owner, request)
        if allowed and self.reaper.apply(request, origin):
            self.applied_requests += 1
        else:
            self.refused_requests += 1

    def _owns(self, origin: Origin, owner: int, request: ArmRequest) -> bool:
        """Whether the target's real uid is ``owner`` now, not only when the engine first
        saw the worker: a process may have changed its uid since (a setuid program run
        by the user). False after a ``refused`` event."""
        pid = request.pid
        actual = self._read_uid(pid)
        if actual is None or actual == owner:
            return True  # gone or the user's own: the engine decides (and checks again)
        self.reaper.emit_refused(
            request, origin, not_own_process(origin.requester, pid, actual).reason
        )
        return False
