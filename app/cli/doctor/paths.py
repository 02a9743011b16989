"""The places the service makes or writes files in: their owners and modes.

The directories are judged by the very rules the service refuses to start on
(``app.access.path_safety.checked_places`` with ``timer_core.safe_dirs``): each one,
and every directory above it, must belong to root or the service's uid and be
writable by nobody else (a sticky directory like /tmp passes for one FIFO or socket).
Unlike ``serve``, doctor reports every place, not the first bad one, and looks at the
files already there too: a FIFO or socket path taken by another kind of file, a
database file that is a link, or one others can read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from app.access.path_safety import checked_places
from app.db.private_files import sqlite_path
from app.settings import Settings
from timer_core.diagnosis import default_stack_dir
from timer_core.safe_dirs import UnsafeDirectoryError, check_directory

from .results import Check, Result, Status

__all__ = ["CHECKS"]

# The places the service makes when missing (by descriptor, each level checked); a
# FIFO's or a socket's directory it only uses.
_MADE_AT_START = frozenset(
    {"--stack-dir", "--fifo-dir", "the database's directory", "the default stack dir"}
)
_SAFE_PLACE = (
    "use a directory that only root or the service's uid can write, such as one under "
    "/run or /var/lib (chown root, chmod 755, or 700 for the database's), with no "
    "directory above it that others can write"
)


def _directory_result(what: str, directory: str, rules: dict[str, bool], bad: Status) -> Result:
    name = f"path: {what}"
    try:
        check_directory(directory, what, **rules)
    except UnsafeDirectoryError as error:
        # safe_dirs' message is the one serve exits with: what is wrong; what to do.
        found, advice, rest = str(error).partition("; use ")
        return Result(name, bad, found, f"use {rest}" if advice else _SAFE_PLACE)
    except OSError as error:
        why = error.strerror or str(error)
        return Result(name, bad, f"cannot check {directory}: {why}", _SAFE_PLACE)
    if not os.path.exists(directory):
        if what not in _MADE_AT_START:
            found = f"{directory} does not exist, and the service does not make it"
            fix = (
                f"make it before the service starts: mkdir -m 0755 {directory} (systemd: "
                "RuntimeDirectory=, as in deploy/systemd/timer-service.service)"
            )
            return Result(name, Status.FAIL, found, fix)
        return Result(name, Status.OK, f"{directory} is missing: the service makes it at start")
    return Result(name, Status.OK, f"{directory}: only root or uid {os.geteuid()} can change it")


def _existing(
    name: str, path: str, want: Callable[[int], bool], kind: str, fix: str
) -> Result | None:
    """A fail if ``path`` exists and is not a ``kind`` (``want`` of its st_mode)."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    if want(found.st_mode):
        return None
    return Result(name, Status.FAIL, f"{path} exists and is not a {kind}", fix)


def _database_file(settings: Settings) -> Result | None:
    path = sqlite_path(settings.db_url)
    if path is None:
        return None
    path = path.absolute()
    name = "path: the database file"
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return Result(name, Status.OK, f"{path} is missing: made at start, mode 0600")
    except OSError as error:
        return Result(name, Status.FAIL, f"cannot look at {path}: {error.strerror}", _SAFE_PLACE)
    if stat.S_ISLNK(found.st_mode):
        fix = "give the file's real path in --db-url"
        return Result(name, Status.FAIL, f"{path} is a symbolic link: refused at start", fix)
    if not stat.S_ISREG(found.st_mode):
        fix = "move it away or point --db-url elsewhere"
        return Result(name, Status.FAIL, f"{path} is not a regular file: refused at start", fix)
    mode = stat.S_IMODE(found.st_mode)
    if mode & 0o077:
        found_text = f"{path} has mode {mode:04o}: others can read every captured stack"
        fix = f"chmod 600 {path} (the service tightens it at start if it owns it)"
        return Result(name, Status.WARN, found_text, fix)
    return Result(name, Status.OK, f"{path}: mode {mode:04o}, uid {found.st_uid}")


def check_paths(settings: Settings) -> list[Result]:
    results = [
        _directory_result(what, directory, rules, Status.FAIL)
        for what, directory, rules in checked_places(settings)
    ]
    if settings.capture_stacks and not settings.hub and not settings.stack_dir:
        # serve judges the default when it uses it: an unsafe one costs the dump
        # directories (a WARNING), not the watchdog.
        default = str(default_stack_dir())
        rules = {"follow_last": False}
        results.append(_directory_result("the default stack dir", default, rules, Status.WARN))
    if settings.fifo and not settings.hub:
        fix = "remove it, or give --fifo a path of its own"
        taken = _existing("path: --fifo", settings.fifo, stat.S_ISFIFO, "FIFO", fix)
        results += [taken] if taken else []
    if settings.uds:
        fix = "remove it, or give --uds a path of its own"
        taken = _existing("path: --uds", settings.uds, stat.S_ISSOCK, "socket", fix)
        results += [taken] if taken else []
    database = _database_file(settings)
    results += [database] if database else []
    return results


CHECKS = [Check("paths", check_paths, 5.0, "a directory on the way hangs: a stale NFS mount?")]
