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
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import psutil

from ..engine.events import EventKind, TimerEvent
from .dump_files import DumpPathError

__all__ = ["DumpDirMaker", "check_root_chain"]

# Named as before the move into diagnosis/: operators filter on logger names.
logger = logging.getLogger("timer_core.dump_dirs")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def check_root_chain(root: Path) -> None:
    """Raise DumpPathError unless ``root`` and every directory above it are safe to
    make per-user directories in: owned by root or by us, and writable by nobody else
    (an ancestor may be world-writable if sticky, like /tmp: then others cannot move
    our entries)."""
    me = os.geteuid()
    real = Path(os.path.realpath(root))
    for directory in [*reversed(real.parents), real]:
        status = os.lstat(directory)
        if status.st_uid not in (0, me):
            raise DumpPathError(f"{directory} belongs to uid {status.st_uid}")
        writable_by_others = status.st_mode & 0o022
        sticky = status.st_mode & stat.S_ISVTX and directory != real
        if writable_by_others and not sticky:
            mode = stat.S_IMODE(status.st_mode)
            raise DumpPathError(f"{directory} is writable by group or others (mode {mode:04o})")


class DumpDirMaker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._root_ok = False
        self._reported: set[str] = set()

    def __call__(self, event: TimerEvent) -> None:
        """Listener: a new timer with a dump signal gets its user's directory."""
        if event.kind != EventKind.ACQUIRED or not event.dump_signal:
            return
        try:
            process = psutil.Process(event.pid)
            if event.process_create_time and process.create_time() != event.process_create_time:
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
            except (OSError, DumpPathError) as error:
                self._report(f"cannot make the stack dump directory of uid {uid}: {error}")
                return None
        return self.root / str(uid)

    def _open_root(self) -> int:
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            self._create_root()
            fd = os.open(self.root, _DIR_FLAGS)
        try:
            status = os.fstat(fd)
            if status.st_uid != os.geteuid() or status.st_mode & 0o022:
                raise DumpPathError(
                    f"{self.root} must belong to uid {os.geteuid()} and be writable by "
                    f"no one else (it is uid {status.st_uid}, "
                    f"mode {stat.S_IMODE(status.st_mode):04o})"
                )
            if not self._root_ok:
                check_root_chain(self.root)
                self._root_ok = True
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create_root(self) -> None:
        missing = [d for d in [*reversed(self.root.parents), self.root] if not d.exists()]
        for directory in missing:
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                continue  # made meanwhile by someone else: the checks that follow judge it
            # Exact modes, whatever the umask: workers must get through the parents.
            os.chmod(directory, 0o711 if directory == self.root else 0o755)
        if missing:
            logger.info("made the stack dump root %s (mode 0711)", self.root)
        self._root_ok = False

    def _make(self, root_fd: int, uid: int, gid: int) -> None:
        name = str(uid)
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
        except FileExistsError:
            return
        # Nobody else can write the root, so the entry just made is still ours to set.
        os.chmod(name, 0o700, dir_fd=root_fd)
        os.chown(name, uid, gid, dir_fd=root_fd, follow_symlinks=False)
        logger.info("made the stack dump directory %s (uid %d, mode 0700)", self.root / name, uid)

    def _report(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            logger.warning("%s", message)
