"""A directory of per-user FIFOs, ``DIR/<uid>``, kept safe from the users it serves.

The service (usually root) reads; each FIFO belongs to its uid with mode 0600, so only
that user (and root) can write requests into it. The directory is the service's own,
mode 0755: users can reach their FIFO but cannot create, rename or remove anything in
it. Still, nothing found on disk is trusted: an entry is checked with ``lstat`` before
it is opened, opened with ``O_NOFOLLOW|O_NONBLOCK`` (a symlink fails, nothing blocks),
and checked again with ``fstat`` on the open descriptor (a FIFO, owned by that uid,
with the expected mode). A wrong entry is removed and made anew. Every operation goes
through a descriptor of the directory, which is itself reached and made by descriptor
below directories only root or the service's uid can change (``timer_core.safe_dirs``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pwd
import re
import stat
from dataclasses import dataclass

from .. import log_names
from ..safe_dirs import UnsafeDirectoryError, open_directory
from .fifo_guard import what_changed

__all__ = ["FifoDirError", "FifoDirectory", "UserFifo", "resolve_uids"]

logger = logging.getLogger(log_names.FIFO_DIR)

# Users must traverse the directory to reach their FIFO, and must not write in it.
DIR_MODE = 0o755
# torch's FileTimerClient writes without blocking and fails when the pipe is full;
# a user's FIFO carries one user's workers, so a quarter of the shared FIFO's room.
_PIPE_BYTES = 256 * 1024
_UID_NAME = re.compile(r"[0-9]{1,10}")


class FifoDirError(RuntimeError):
    """The FIFO directory, or one FIFO in it, cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class UserFifo:
    """One uid's FIFO, open for reading, with our own writer keeping it from EOF."""

    uid: int
    path: str
    read_fd: int
    keepalive_fd: int
    device: int
    inode: int

    def close(self) -> None:
        for fd in (self.read_fd, self.keepalive_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def resolve_uids(spec: str | None) -> list[int]:
    """``--fifo-users``: comma-separated user names or uids, as uids."""
    uids = []
    for item in (spec or "").split(","):
        name = item.strip()
        if not name:
            continue
        if _UID_NAME.fullmatch(name):
            uids.append(int(name))
            continue
        try:
            uids.append(pwd.getpwnam(name).pw_uid)
        except KeyError:
            raise FifoDirError(f"--fifo-users: there is no user {name!r} on this host") from None
    return list(dict.fromkeys(uids))


class FifoDirectory:
    def __init__(self, path: str, *, mode: int = 0o600) -> None:
        self.path = os.path.abspath(path)
        self.mode = mode
        self._dir_fd = _open_own_directory(self.path)

    def fifo_path(self, uid: int) -> str:
        return os.path.join(self.path, str(uid))

    def uids(self) -> list[int]:
        """The uids that have an entry here (left by an earlier run, say)."""
        return sorted(int(name) for name in os.listdir(self._dir_fd) if _UID_NAME.fullmatch(name))

    def open(self, uid: int) -> tuple[UserFifo, bool]:
        """The FIFO of ``uid``, open for reading: the one on disk if it is right, else a
        fresh one. Returns it and whether it was made now."""
        if uid < 0:
            raise FifoDirError(f"uid {uid} is not a user")
        name = str(uid)
        # Only root could change the entry between our checks; two rounds are plenty
        # for an honest race, and a loop that never settles must not spin.
        for _ in range(3):
            found = self._lstat(name)
            if found is not None and (why := self._wrong(found, uid)) is not None:
                logger.warning("replacing %s: %s", self.fifo_path(uid), why)
                self._discard(name)
                found = None
            if found is None:
                try:
                    os.mkfifo(name, 0o600, dir_fd=self._dir_fd)
                except FileExistsError:
                    continue  # made by someone else meanwhile: check it afresh
            fifo = self._open_checked(name, uid, made=found is None)
            if fifo is not None:
                return fifo, found is None
        raise FifoDirError(f"{self.fifo_path(uid)} keeps changing while the service makes it")

    def change(self, fifo: UserFifo) -> str | None:
        """Why ``DIR/<uid>`` is no longer this very FIFO, owned by its uid, unchanged
        (deleted, replaced, ...); None while it still is."""
        found = self._lstat(str(fifo.uid))
        return what_changed(found, fifo.device, fifo.inode, fifo.uid, self.mode)

    def is_current(self, fifo: UserFifo) -> bool:
        return self.change(fifo) is None

    def discard(self, uid: int) -> None:
        """Remove ``DIR/<uid>`` whatever it is now (never a directory: that raises), so
        that ``open`` makes a fresh FIFO rather than adopt one another program made."""
        self._discard(str(uid))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._dir_fd)

    # ---- internals -----------------------------------------------------------------------

    def _lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _wrong(self, found: os.stat_result, uid: int) -> str | None:
        if not stat.S_ISFIFO(found.st_mode):
            return f"it is not a FIFO (mode {found.st_mode:o})"
        if found.st_uid != uid:
            return f"it belongs to uid {found.st_uid}"
        if stat.S_IMODE(found.st_mode) != self.mode:
            return f"its mode is {stat.S_IMODE(found.st_mode):o}, not {self.mode:o}"
        return None

    def _discard(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise FifoDirError(
                f"cannot remove {os.path.join(self.path, name)} to make a FIFO there: "
                f"{error.strerror}; remove it by hand"
            ) from None

    def _open_checked(self, name: str, uid: int, *, made: bool) -> UserFifo | None:
        """Open the entry without following a link or blocking, then check what was
        opened; None (the entry removed) if it is not what it must be."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno != errno.ELOOP:  # ELOOP: a symlink appeared; discard it
                raise FifoDirError(f"cannot open {self.fifo_path(uid)}: {error.strerror}") from None
            self._discard(name)
            return None
        try:
            if made:
                # Made by us, so still ours (root's, 0600): nobody else could open it
                # before it is handed over here.
                _hand_over(fd, uid, self.mode, self.fifo_path(uid))
            opened = os.fstat(fd)
            if self._wrong(opened, uid) is not None:
                os.close(fd)
                self._discard(name)
                return None
            # The write end of the very FIFO opened above, not of whatever the name
            # points to by now.
            keepalive = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        return UserFifo(uid, self.fifo_path(uid), fd, keepalive, opened.st_dev, opened.st_ino)


def _hand_over(fd: int, uid: int, mode: int, path: str) -> None:
    try:
        os.fchown(fd, uid, -1)
    except PermissionError:
        raise FifoDirError(
            f"the service runs as uid {os.geteuid()} and cannot give uid {uid} a FIFO of "
            f"its own ({path}); run it as root"
        ) from None
    os.fchmod(fd, mode)


def _open_own_directory(path: str) -> int:
    """Create (0755) or take the directory, refusing one that is not the service's or
    that lies below a directory another user can change: clients open ``DIR/<uid>`` by
    name, and that user could swap the directory they reach."""
    try:
        fd = open_directory(
            path, "the FIFO directory", make=(DIR_MODE, 0o755), follow_last=False, loose_last=True
        )
    except UnsafeDirectoryError as error:
        raise FifoDirError(str(error)) from None
    except OSError as error:
        raise FifoDirError(f"cannot use {path} as the FIFO directory: {error.strerror}") from None
    found = os.fstat(fd)
    if found.st_uid != os.geteuid():
        os.close(fd)
        raise FifoDirError(
            f"the FIFO directory {path} belongs to uid {found.st_uid}, not to the service "
            f"(uid {os.geteuid()}): another user could rename its FIFOs; remove it or "
            "choose another --fifo-dir"
        )
    if stat.S_IMODE(found.st_mode) != DIR_MODE:
        logger.warning(
            "the FIFO directory %s had mode %o; setting %o",
            path,
            stat.S_IMODE(found.st_mode),
            DIR_MODE,
        )
        os.fchmod(fd, DIR_MODE)
    return fd
