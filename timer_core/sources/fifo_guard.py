"""Whether the path of a FIFO the service reads still leads to that FIFO, and whether
what took its place may be cleared to make the FIFO again.

The failure this answers: torch's own agent, with ``TORCHELASTIC_ENABLE_FILE_TIMER=1``,
runs a ``FileTimerServer`` on the path its workers write to. It removes whatever is
there and makes its own FIFO at start, and removes that at exit. The service kept
reading a FIFO nobody could reach any more, every later job failed with
``FileNotFoundError``, and ``/healthz`` said ``ok``.

Both checks look at the name with ``lstat`` (never following a link, never opening, so
never blocking), and every change is made through a descriptor of the directory.
"""

from __future__ import annotations

import os
import stat

__all__ = ["blocker_of", "lstat_or_none", "what_changed"]

_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def what_changed(
    found: os.stat_result | None, device: int, inode: int, uid: int, mode: int
) -> str | None:
    """Why ``found`` (the ``lstat`` of the path, None if there is none) is not the FIFO
    ``(device, inode)`` owned by ``uid`` with ``mode``; None if it still is."""
    if found is None:
        return "was deleted"
    if not stat.S_ISFIFO(found.st_mode):
        kind = _KINDS.get(stat.S_IFMT(found.st_mode), "something else")
        return f"was replaced by {kind}"
    if (found.st_dev, found.st_ino) != (device, inode):
        return "was replaced by another FIFO (as torch's FileTimerServer does when it starts)"
    if found.st_uid != uid:
        return f"was given to uid {found.st_uid}"
    if stat.S_IMODE(found.st_mode) != mode:
        return f"had its mode changed to {stat.S_IMODE(found.st_mode):04o}"
    return None


def lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def blocker_of(path: str) -> str | None:
    """Clear ``path`` for a new FIFO where that is safe: what is not a FIFO there is
    removed when the service owns the directory (a FIFO is replaced by the maker itself).
    Returns None when the path is ready, else what stops it and what to do."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        return (
            f"its directory {directory} cannot be opened ({error.strerror}); make it again "
            "and the service makes the FIFO there"
        )
    try:
        owner = os.fstat(dir_fd).st_uid
        try:
            found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISFIFO(found.st_mode):
            return None
        if owner != os.geteuid():
            # Another user's directory: what is in it is not ours to delete.
            return (
                f"{path} is not the FIFO and its directory belongs to uid {owner}: remove "
                f"{path} by hand, and keep --fifo in a directory only the service can write"
            )
        if stat.S_ISDIR(found.st_mode):
            return f"{path} is a directory: remove it (the service never deletes a directory)"
        try:
            os.unlink(name, dir_fd=dir_fd)  # a link itself, never what it names
        except FileNotFoundError:
            pass
        except OSError as error:
            # Swapped for a directory (or made undeletable) since the stat: say so, as
            # for a directory found there, instead of failing the guard's round.
            return f"{path} cannot be removed ({error.strerror}): remove it by hand"
        return None
    finally:
        os.close(dir_fd)
