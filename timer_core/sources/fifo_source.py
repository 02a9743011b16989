"""Reads torch's JSON-lines requests from a FIFO and applies them to a Reaper.

The FIFO is opened without blocking (so ``stop()`` never waits for a client)
and kept open for writing by this process too, so it never reports EOF and
the reader sleeps in ``select`` until a client writes. Malformed lines are
logged, counted and skipped; the good lines around them still apply.

With ``may_read``, the reader leaves requests in the pipe while it says no (the
service: while its recorder is behind), so a burst waits in the kernel and in the
writers instead of in this process's memory: at most one read (64 KiB) goes past it.

With ``guard``, the reader also checks every ``GUARD_SECONDS`` that its path still is the
FIFO it reads (``fifo_guard``), and makes it again when it was deleted or replaced;
until it can, ``problem`` says why (``/healthz`` is degraded).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable

from .. import log_names
from ..engine import Reaper
from ..engine.arm_request import ArmRequest, Origin
from ..engine.poll_thread import PollThread
from ..safe_dirs import UnsafeDirectoryError, open_directory
from .fifo_guard import blocker_of, lstat_or_none, what_changed
from .fifo_lines import FifoLines, MalformedLines

__all__ = ["FIFO", "GUARD_SECONDS", "PAUSE_POLL_SECONDS", "FifoSource", "create_fifo"]

logger = logging.getLogger(log_names.FIFO_SOURCE)

_READ_CHUNK = 65536
# How often a paused reader asks again whether it may read.
PAUSE_POLL_SECONDS = 0.02
# How often a guarded reader checks that its path still leads to its FIFO: one lstat.
GUARD_SECONDS = 1.0
# Linux's default cap for unprivileged pipes (/proc/sys/fs/pipe-max-size): ~10k requests.
_PIPE_BYTES = 1 << 20

# Whoever can write the shared FIFO may target any process, as torch's server allows:
# its mode (0600, the service's own user) decides who that is.
FIFO = Origin("fifo")


def create_fifo(path: str, mode: int = 0o600) -> None:
    """Make a fresh FIFO at ``path`` with exactly ``mode`` (umask notwithstanding), by
    descriptor: its directory is reached through ``timer_core.safe_dirs`` (refused if
    another user could change it: a sticky one such as /tmp is fine, since others cannot
    move our entries there), and the mode is set with ``fchmod`` on the new FIFO."""
    where = os.path.dirname(os.path.abspath(path))
    try:
        directory = open_directory(where, "the FIFO's directory", sticky_last=True)
    except FileNotFoundError:
        # Named, with what to do: the bare errno names only the directory, not why.
        raise FileNotFoundError(
            f"--fifo {path}: its directory {where} does not exist; create it "
            f"(mkdir -p {where}) or choose another --fifo path"
        ) from None
    name = os.path.basename(path)
    try:
        try:
            existing = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISFIFO(existing.st_mode):
                raise FileExistsError(
                    f"{path} exists and is not a FIFO; remove it or choose another --fifo path"
                )
            os.unlink(name, dir_fd=directory)
        os.mkfifo(name, 0o600, dir_fd=directory)  # nobody else may open it before fchmod
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=directory)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    finally:
        os.close(directory)


def _enlarge_pipe(fd: int) -> None:
    """Give bursts room: torch's FileTimerClient writes without blocking and raises
    (EAGAIN) when the pipe is full, so a 64 KiB pipe drops requests under load."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError as error:
        logger.info("could not enlarge the FIFO buffer to %d bytes: %s", _PIPE_BYTES, error)


class FifoSource:
    def __init__(
        self,
        path: str,
        reaper: Reaper,
        *,
        mode: int = 0o600,
        create: bool = True,
        on_malformed: Callable[[str], None] | None = None,
        may_read: Callable[[], bool] | None = None,
        guard: bool = False,
    ) -> None:
        self.path = path
        self._may_read = may_read or _always
        self.reaper = reaper
        self.applied_requests = 0
        # Every well-formed request, applied or refused (torch's _request_count).
        self.requests = 0
        self._malformed = MalformedLines(logger, on_malformed)
        self._where = f"FIFO line on {path}"
        self._mode = mode
        self._guard = guard
        # Set while the path is not our FIFO and cannot be made again; why, for /healthz.
        self.problem: str | None = None
        # Times the FIFO was made again after it was deleted or replaced.
        self.restorations = 0
        if create:
            create_fifo(path, mode)
        self._read_fd, self._keepalive_fd, self._identity = self._open()
        self._loop = PollThread("timer-fifo")
        self._loop.register(self._read_fd)
        self._lines = self._new_lines()

    def _open(self) -> tuple[int, int, os.stat_result]:
        """The FIFO at ``path`` open for reading, our own writer of that very FIFO (it
        keeps the FIFO from hitting EOF when clients close), and what it is."""
        read_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            opened = os.fstat(read_fd)
            if not stat.S_ISFIFO(opened.st_mode) or opened.st_uid != os.geteuid():
                raise FileExistsError(f"{self.path} is not a FIFO of the service's own")
            _enlarge_pipe(read_fd)
            # By descriptor: the FIFO opened above, not whatever the name leads to now.
            keepalive_fd = os.open(
                f"/proc/self/fd/{read_fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except BaseException:
            os.close(read_fd)
            raise
        return read_fd, keepalive_fd, opened

    def _new_lines(self) -> FifoLines:
        return FifoLines(self._where, self._malformed)

    def changed(self) -> str | None:
        """Why ``path`` no longer leads to the FIFO being read; None while it does."""
        held = self._identity
        return what_changed(
            lstat_or_none(self.path), held.st_dev, held.st_ino, held.st_uid, self._mode
        )

    def guard_once(self) -> None:
        """Make the FIFO again if its path was deleted or replaced (see the module).
        Runs on the reader's thread, so no read is ever in the middle of the swap."""
        why = self.changed()
        if why is None:
            return
        blocker = blocker_of(self.path)
        if blocker is None:
            try:
                create_fifo(self.path, self._mode)
                read_fd, keepalive_fd, identity = self._open()
            except (OSError, UnsafeDirectoryError) as error:
                blocker = f"it cannot be made again: {error}"
            else:
                self.drain()  # what writers put in the old one before it went
                self._loop.unregister(self._read_fd)
                for fd in (self._read_fd, self._keepalive_fd):
                    os.close(fd)
                self._read_fd, self._keepalive_fd, self._identity = read_fd, keepalive_fd, identity
                self._loop.register(read_fd)
                self._lines = self._new_lines()  # a partial line of the old one is void
                self.problem = None
                self.restorations += 1
                logger.warning(
                    "the FIFO %s %s: made it again (mode %04o); requests written while it "
                    "was away were lost",
                    self.path,
                    why,
                    self._mode,
                )
                return
        problem = f"the FIFO {self.path} {why}, and is not served: {blocker}"
        if problem != self.problem:  # once, not every round
            logger.warning("%s", problem)
        self.problem = problem

    def start(self) -> None:
        self._loop.start(self._run)

    def stop(self, remove: bool = True) -> None:
        self._loop.stop()
        self._loop.close()
        # Only our own FIFO: another program may have put its own there meanwhile.
        ours = self.changed() is None
        for fd in (self._read_fd, self._keepalive_fd):
            os.close(fd)
        if remove and ours:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def drain(self) -> int:
        """Apply every complete request waiting in the FIFO now, or until ``may_read``
        says no; returns how many lines."""
        lines = 0
        while self._may_read():
            try:
                chunk = os.read(self._read_fd, _READ_CHUNK)
            except BlockingIOError:
                return lines
            if not chunk:
                return lines
            lines += self.feed(chunk)
        return lines

    def feed(self, chunk: bytes) -> int:
        """Apply the request on each line that ends in ``chunk`` (a trailing partial line
        is kept); returns how many lines ended in it."""
        lines = self._lines
        ended = lines.ended
        for request in lines.requests(chunk):
            self.apply(request)
        return lines.ended - ended

    @property
    def malformed_lines(self) -> int:
        return self._malformed.count

    def apply(self, request: ArmRequest) -> None:
        self.requests += 1
        if self.reaper.apply(request, FIFO):
            self.applied_requests += 1

    def _run(self) -> None:
        next_guard = time.monotonic() + GUARD_SECONDS
        while not self._loop.stopping:
            if not self._may_read():
                # Paused: wait for stop() or the next look, not for data (the FIFO
                # stays readable, so a poll would return at once).
                self._loop.sleep(PAUSE_POLL_SECONDS)
            else:
                self._loop.poll(max(0.0, next_guard - time.monotonic()) if self._guard else None)
                if self._loop.stopping:
                    return
                try:
                    self.drain()
                except Exception:
                    logger.exception("error reading the FIFO %s", self.path)
            if self._guard and time.monotonic() >= next_guard:
                next_guard = time.monotonic() + GUARD_SECONDS
                try:
                    self.guard_once()
                except Exception:
                    logger.exception("error checking the FIFO %s", self.path)


def _always() -> bool:
    return True
