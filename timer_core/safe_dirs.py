"""Directories the service (usually root) makes or writes in, reached by descriptor,
never by path.

The attack this stops: ``--stack-dir`` lay below a directory another user owned. The
service made the directory with ``mkdir``, then set its mode with ``chmod`` by path;
between the two the user renamed the new directory away and put a link to a root-only
file in its place, and root's ``chmod`` opened that file to everyone.

So a path is walked from ``/`` one level at a time, each level opened with
``O_DIRECTORY|O_NOFOLLOW`` relative to the one above (``openat``), and each checked on
its descriptor (``fstat``) before the next is opened: it must belong to root or to the
service's uid, and nobody else may write it, except that an ancestor may be sticky and
world-writable like ``/tmp`` (others cannot move our entries there). A missing level is
made relative to its parent's descriptor (``mkdirat``) and its mode set with ``fchmod``
on its own descriptor. A symbolic link on the way is followed only when root or the
service's uid owns it (``/var/run`` -> ``/run``), and the directories it leads to are
checked alike. Nothing another user can change is ever on the way, so nothing can be
swapped between a check and its use.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DIR_FLAGS",
    "UnsafeDirectoryError",
    "check_directory",
    "open_directory",
    "replaceable_by_others",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# The levels above the place are only walked through (openat, fstat): O_PATH needs no
# read permission on them, so a service that is not root passes a 0711 directory too.
_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# As the kernel's own limit on links followed in one lookup.
_MAX_LINKS = 40


class UnsafeDirectoryError(PermissionError):
    """A directory another user could change; the message says which, why and what to do.
    An OSError, so callers that handle a directory they cannot use handle this one too."""


@dataclass(frozen=True, slots=True)
class _LastRules:
    """What the place itself (the last level) may be; see ``open_directory``."""

    follow: bool
    loose: bool
    sticky: bool


class _Walk:
    """One walk down ``path``; ``make`` is (mode of the last level, mode of the others)
    to make missing levels, or None to stop at the first missing one."""

    def __init__(self, path: str | Path, what: str, rules: _LastRules) -> None:
        self.path = os.path.abspath(path)
        self.what = what
        self.last = rules
        self.me = os.geteuid()

    def refuse(self, where: str, why: str, *, last: bool) -> UnsafeDirectoryError:
        place = f"{self.what} {self.path}"
        if not last:
            place += f" lies below {where}, which"
        elif where != self.path:
            place += f" (that is, {where})"
        return UnsafeDirectoryError(
            f"{place} {why}: another user could swap what the service makes there as uid "
            f"{self.me} for a link to any file; use a directory that only root or uid "
            f"{self.me} can change, such as one under /run or /var/lib"
        )

    def check(self, fd: int, where: str, *, last: bool) -> None:
        status = os.fstat(fd)
        if status.st_uid not in (0, self.me):
            raise self.refuse(where, f"belongs to uid {status.st_uid}", last=last)
        mode = stat.S_IMODE(status.st_mode)
        # Sticky (like /tmp): others cannot move our entries. Fine above the place, and
        # in it for a single FIFO or socket; not for a directory of several of ours.
        sticky = mode & stat.S_ISVTX and (not last or self.last.sticky)
        if mode & 0o022 and not sticky and not (last and self.last.loose):
            why = f"is writable by group or others (mode {mode:04o})"
            raise self.refuse(where, why, last=last)

    def run(self, make: tuple[int, int] | None) -> int | None:
        """The last level's descriptor (the caller closes it); None if a level is missing
        and ``make`` is None."""
        names = deque(part for part in self.path.split("/") if part)
        shown = [""]
        fd = os.open("/", DIR_FLAGS if not names else _WALK_FLAGS)
        links = 0
        try:
            self.check(fd, "/", last=not names)
            while names:
                name = names.popleft()
                last = not names
                where = "/".join([*shown, name])
                child = self._open(fd, name, where, make, last=last)
                if child is None:
                    os.close(fd)
                    return None
                if isinstance(child, str):  # a link of ours: walk its target instead
                    links += 1
                    if links > _MAX_LINKS:
                        raise self.refuse(where, "leads through too many links", last=last)
                    names.extendleft(reversed([p for p in child.split("/") if p]))
                    if child.startswith("/"):
                        os.close(fd)
                        # Closed: if the open below fails, the handler must not close
                        # this number again (another thread may hold it by then).
                        fd = -1
                        fd = os.open("/", DIR_FLAGS if not names else _WALK_FLAGS)
                        shown = [""]
                    continue
                os.close(fd)
                fd = child
                shown = shown[:-1] if name == ".." and len(shown) > 1 else [*shown, name]
                self.check(fd, "/".join(shown) or "/", last=last)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return fd

    def _open(
        self, parent: int, name: str, where: str, make: tuple[int, int] | None, *, last: bool
    ) -> int | str | None:
        """The level's descriptor, its link's target, or None if it is missing."""
        try:
            return os.open(name, DIR_FLAGS if last else _WALK_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if make is None:
                return None
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            found = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISLNK(found.st_mode):
                raise self.refuse(where, "is not a directory", last=last) from None
            if last and not self.last.follow:
                why = "is a symbolic link (give the real path)"
                raise self.refuse(where, why, last=last) from None
            if found.st_uid not in (0, self.me):
                why = f"is a symbolic link of uid {found.st_uid}"
                raise self.refuse(where, why, last=last) from None
            return os.readlink(name, dir_fd=parent)
        mode = make[0] if last else make[1]
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:  # made meanwhile by another: the check that follows judges it
            return os.open(name, DIR_FLAGS if last else _WALK_FLAGS, dir_fd=parent)
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)  # ours: readable, and fchmod needs it
        try:
            os.fchmod(fd, mode)  # exactly, whatever the umask; on the descriptor
        except BaseException:
            os.close(fd)
            raise
        return fd


def open_directory(
    path: str | Path,
    what: str,
    *,
    make: tuple[int, int] | None = None,
    follow_last: bool = True,
    loose_last: bool = False,
    sticky_last: bool = False,
) -> int:
    """A descriptor of the directory ``path``, every level from ``/`` checked (see the
    module); the caller closes it. ``what`` names it in errors (``--stack-dir``).

    - ``make``: (mode of ``path``, mode of the levels above it) to make what is missing;
      else a missing level raises FileNotFoundError.
    - ``follow_last``: whether ``path`` itself may be a link of root's or ours.
    - ``loose_last``: the caller tightens ``path``'s mode itself: only its owner counts.
    - ``sticky_last``: ``path`` may be sticky and world-writable (a single FIFO or
      socket in /tmp)."""
    rules = _LastRules(follow_last, loose_last, sticky_last)
    fd = _Walk(path, what, rules).run(make)
    if fd is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    return fd


def check_directory(
    path: str | Path,
    what: str,
    *,
    follow_last: bool = True,
    loose_last: bool = False,
    sticky_last: bool = False,
) -> None:
    """Raise UnsafeDirectoryError if ``path``, or any directory above it, could be
    changed by another user (rules as ``open_directory``). Levels still missing are
    fine: the service makes them."""
    fd = _Walk(path, what, _LastRules(follow_last, loose_last, sticky_last)).run(None)
    if fd is not None:
        os.close(fd)


def replaceable_by_others(program: str) -> str | None:
    """Why another user could replace ``program``, a file the service runs (py-spy, as
    root), or what its link leads to; None when only root or the service's uid could.
    A binary in a directory others can write runs their code with the service's rights."""
    me = os.geteuid()
    for path in dict.fromkeys((os.path.abspath(program), os.path.realpath(program))):
        try:
            # Every level from / by descriptor, links only of root's or ours followed.
            check_directory(os.path.dirname(path), "the program's directory")
            info = os.lstat(path)
        except OSError as error:  # UnsafeDirectoryError says which level and why
            return str(error).partition("; use ")[0]
        if info.st_uid not in (0, me):
            return f"{path} belongs to uid {info.st_uid}"
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISLNK(info.st_mode) and mode & 0o022:
            return f"{path} is writable by group or others (mode {mode:04o})"
    return None
