"""The service's side of stack dump directories: one per uid, made by the service, so
no user can squat another's (see ``dump_files`` for how workers find them).

Layout, for the default root of a service running as root::

    /run/timer-service             root  0755
    /run/timer-service/stacks      root  0711   workers reach their own, list nobody's
    /run/timer-service/stacks/<uid> uid  0700   only that user's workers write here

When: ``DumpDirMaker`` listens to the engine's events. On each ``acquired`` event
whose request carries a dump signal it makes the directory of the worker's uid if it
is missing, off the reaper's thread. The capture makes it too if it is still missing
(timers restored at start). A worker picks its directory when it registers its
handler, so a user's very first worker writes to its private fallback, which the
service reads as well; the next ones find the service's directory.

How: by descriptor, never by path (``timer_core.safe_dirs``). The root and every
directory above it are checked before anything is made below them, and each new
directory's mode and owner are set with ``fchmod``/``fchown`` on its own descriptor.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import psutil

from .. import log_names
from ..engine.events import TimerEvent
from ..engine.states import EventKind
from ..engine.timers import Timer
from ..safe_dirs import DIR_FLAGS, UnsafeDirectoryError, open_directory
from .dump_files import DumpPathError

__all__ = ["DumpDirMaker"]

logger = logging.getLogger(log_names.DUMP_DIRS)

_ROOT_MODES = (0o711, 0o755)  # the root: workers reach their own; the levels above


class DumpDirMaker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._reported: set[str] = set()

    def __call__(self, event: TimerEvent) -> None:
        """Listener: a new timer with a dump signal gets its user's directory."""
        timer = event.timer
        if (
            event.kind != EventKind.ACQUIRED
            or not isinstance(timer, Timer)
            or not timer.dump_signal
        ):
            return
        try:
            process = psutil.Process(timer.pid)
            if timer.process_create_time and process.create_time() != timer.process_create_time:
                return  # the pid names another process now
            uid, gid = process.uids().real, process.gids().real
        except psutil.Error:
            return
        self.ensure(uid, gid)

    def ensure(self, uid: int, gid: int) -> Path | None:
        """``<root>/<uid>``, made (owner uid, mode 0700) if missing; None if it cannot
        be (logged once per reason). An existing one is left as it is: its owner may
        have changed it, and a hostile owner could make even a stat of it hang."""
        me = os.geteuid()
        if me != 0 and uid != me:
            return None  # only root can give a directory away
        with self._lock:
            try:
                root_fd = self._open_root()
                try:
                    self._make(root_fd, uid, gid)
                finally:
                    os.close(root_fd)
            except (OSError, DumpPathError, UnsafeDirectoryError) as error:
                self._report(f"cannot make the stack dump directory of uid {uid}: {error}")
                return None
        return self.root / str(uid)

    def _open_root(self) -> int:
        fd = open_directory(self.root, "the stack dump root", make=_ROOT_MODES, follow_last=False)
        try:
            status = os.fstat(fd)
            if status.st_uid != os.geteuid():
                raise DumpPathError(
                    f"{self.root} must belong to uid {os.geteuid()} (it is uid {status.st_uid})"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _make(self, root_fd: int, uid: int, gid: int) -> None:
        name = str(uid)
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
        except FileExistsError:
            return
        # Set on the new directory's own descriptor: nobody else can write the root, and
        # even so no name is looked up twice.
        fd = os.open(name, DIR_FLAGS, dir_fd=root_fd)
        try:
            os.fchmod(fd, 0o700)
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
        logger.info("made the stack dump directory %s (uid %d, mode 0700)", self.root / name, uid)

    def _report(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            logger.warning("%s", message)
