"""Where a worker's own stack dump lives, and how both sides open it without trusting
the path.

A worker that opted in (``dump_stack_on``) writes ``<dir>/<pid>.stack``; the service,
often root, reads it. Every directory on the way may be someone else's doing, so:

- The worker picks its directory with no configuration: ``$TIMER_SERVICE_STACK_DIR/<uid>``
  if that is set; else ``<stack root>/<uid>`` if a service has created it (the root is
  ``/run/timer-service/stacks``, or ``$XDG_RUNTIME_DIR/timer-service/stacks`` for a
  service of the worker's own user); else ``$TMPDIR/timer-stacks-<uid>``, made 0700.
  It refuses a directory that is a link, that is not its own, or that others can
  write: in ``/tmp`` another user could have made it first to aim the worker (perhaps
  root) at any file through a planted link.
- The worker creates its file ``O_NOFOLLOW|O_CREAT|O_APPEND``, 0600, relative to the
  directory it checked, and checks the file it got.
- The service reads with ``O_NONBLOCK|O_NOFOLLOW``: a planted FIFO cannot block it and a
  planted link cannot make it read (and serve) another file. It checks the directory
  and the file (regular, owned by the worker's uid, one link) before reading, and never
  opens anything under a FUSE mount, whose owner could make any call hang.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

__all__ = [
    "STACK_DIR_ENV",
    "SYSTEM_STACK_DIR",
    "DumpPathError",
    "default_stack_dir",
    "dump_file_name",
    "fallback_dump_dir",
    "open_dump_for_reading",
    "open_dump_for_writing",
    "reader_dump_dirs",
    "worker_dump_dir",
]

STACK_DIR_ENV = "TIMER_SERVICE_STACK_DIR"
# Where a service running as root keeps one directory per uid (created by the service).
SYSTEM_STACK_DIR = Path("/run/timer-service/stacks")

# No open may follow a link or wait: not for a FIFO's other end, not for a terminal.
# (O_NONBLOCK changes nothing for the regular files that are then accepted.)
_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _SAFE
_READ_FLAGS = os.O_RDONLY | _SAFE
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | _SAFE
# A dump file older than its worker's start time, less this, is a stale one.
_START_SLACK = 2.0
_FIX = (
    f"set {STACK_DIR_ENV} to a directory of your own (mode 0700), or ask the service's "
    f"administrator to create {SYSTEM_STACK_DIR}/<uid> for you"
)


class DumpPathError(RuntimeError):
    """A dump directory or file that must not be used; the message says why and what to do."""


def dump_file_name(pid: int) -> str:
    return f"{pid}.stack"


def default_stack_dir(euid: int | None = None) -> Path:
    """The service's default stack root for a service running as ``euid``."""
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return SYSTEM_STACK_DIR
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "timer-service" / "stacks"
    return Path(tempfile.gettempdir()) / f"timer-service-{euid}" / "stacks"


def fallback_dump_dir(uid: int) -> Path:
    """The private directory a worker makes for itself when no service made one."""
    return Path(tempfile.gettempdir()) / f"timer-stacks-{uid}"


def _service_roots() -> list[Path]:
    # A root service's, then one of this user's own (same uid, same environment).
    return list(dict.fromkeys([SYSTEM_STACK_DIR, default_stack_dir()]))


def worker_dump_dir(uid: int) -> tuple[Path, bool]:
    """The directory a worker of ``uid`` writes to, and whether it may create it."""
    override = os.environ.get(STACK_DIR_ENV)
    if override:
        return Path(override) / str(uid), True
    for root in _service_roots():
        candidate = root / str(uid)
        if os.path.lexists(candidate):
            return candidate, False  # the service's: used as it is, never created here
    return fallback_dump_dir(uid), True


def reader_dump_dirs(uid: int, stack_dir: Path | None = None) -> list[Path]:
    """Every directory a worker of ``uid`` may have picked, the service's own first."""
    dirs = [stack_dir / str(uid)] if stack_dir is not None else []
    override = os.environ.get(STACK_DIR_ENV)
    if override:
        dirs.append(Path(override) / str(uid))
    dirs += [root / str(uid) for root in _service_roots()]
    dirs.append(fallback_dump_dir(uid))
    return list(dict.fromkeys(dirs))


def _open_dir(directory: Path) -> int:
    try:
        return os.open(directory, _DIR_FLAGS)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise DumpPathError(
                f"{directory} is a symbolic link or not a directory: not followed"
            ) from None
        raise


def _check_dir(fd: int, directory: Path, owner: int) -> None:
    status = os.fstat(fd)
    if status.st_uid != owner:
        raise DumpPathError(
            f"{directory} belongs to uid {status.st_uid}, not uid {owner}: "
            "someone else may have made it to aim stack dumps at a file of their choice"
        )
    if status.st_mode & 0o022:
        raise DumpPathError(
            f"{directory} is writable by group or others "
            f"(mode {stat.S_IMODE(status.st_mode):04o}): anyone could plant files in it"
        )


def _check_file(fd: int, path: Path, owner: int) -> None:
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise DumpPathError(f"{path} is not a regular file (a FIFO or device?): not used")
    if status.st_uid != owner:
        raise DumpPathError(f"{path} belongs to uid {status.st_uid}, not uid {owner}")
    if status.st_nlink != 1:
        raise DumpPathError(f"{path} has {status.st_nlink} hard links: not used")


def open_dump_for_writing(directory: Path, pid: int, *, create: bool) -> int:
    """The worker's side: a descriptor to append its dumps to, in ``directory``, which
    it must own and nobody else may write. Raises DumpPathError saying what to do."""
    me = os.geteuid()
    if create:
        directory.parent.mkdir(parents=True, exist_ok=True)
        # One that exists is checked below, like any directory we did not just make.
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    try:
        dir_fd = _open_dir(directory)
    except DumpPathError as error:
        raise DumpPathError(f"cannot write stack dumps: {error}; remove it, or {_FIX}") from None
    except OSError as error:
        raise DumpPathError(
            f"cannot write stack dumps to {directory}: {error.strerror}; {_FIX}"
        ) from None
    path = directory / dump_file_name(pid)
    try:
        _check_dir(dir_fd, directory, me)
        # Relative to the directory just checked: it cannot be swapped in between.
        fd = os.open(dump_file_name(pid), _WRITE_FLAGS, 0o600, dir_fd=dir_fd)
    except DumpPathError as error:
        raise DumpPathError(f"cannot write stack dumps: {error}; remove it, or {_FIX}") from None
    except OSError as error:
        why = "it is a symbolic link" if error.errno == errno.ELOOP else error.strerror
        raise DumpPathError(f"cannot write stack dumps to {path}: {why}; {_FIX}") from None
    finally:
        os.close(dir_fd)
    try:
        _check_file(fd, path, me)
        # Touched now: a file older than its process was left by an earlier one with
        # the same pid, and the service will not signal on the strength of it.
        os.utime(fd)
    except DumpPathError as error:
        os.close(fd)
        raise DumpPathError(f"cannot write stack dumps: {error}; {_FIX}") from None
    return fd


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _fuse_mounts() -> list[str]:
    """Where FUSE file systems are mounted. A FUSE file system's owner answers every
    call on it, and may never answer: a user can mount one on a directory of their
    own, so the service opens nothing at, above or below such a mount."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        # id parent dev root mount-point options [optional fields...] - fstype source ...
        fields = line.split()
        try:
            fstype = fields[fields.index("-", 6) + 1]
        except (ValueError, IndexError):
            continue
        if fstype.startswith("fuse"):
            found.append(_unescape(fields[4]))
    return found


def _fuse_mount_of(directory: Path, mounts: list[str]) -> str | None:
    path = os.path.join(os.path.realpath(directory.parent), directory.name)
    for mount in mounts:
        if (
            mount == path
            or mount.startswith(path + "/")
            or path.startswith(mount.rstrip("/") + "/")
        ):
            return mount
    return None


def _open_one(
    directory: Path, pid: int, uid: int, started_at: float | None, fuse_mounts: list[str]
) -> int:
    mount = _fuse_mount_of(directory, fuse_mounts)
    if mount is not None:
        raise DumpPathError(f"{directory} is on a FUSE mount ({mount}): not opened")
    dir_fd = _open_dir(directory)
    path = directory / dump_file_name(pid)
    try:
        _check_dir(dir_fd, directory, uid)
        try:
            fd = os.open(dump_file_name(pid), _READ_FLAGS, dir_fd=dir_fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise DumpPathError(f"{path} is a symbolic link: not followed") from None
            raise
    finally:
        os.close(dir_fd)
    try:
        _check_file(fd, path, uid)
        modified = os.fstat(fd).st_mtime
        # The slack covers the start time's rounding (whole-second boot time).
        if started_at is not None and modified < started_at - _START_SLACK:
            raise DumpPathError(f"{path} is older than the worker: left by an earlier process")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dump_for_reading(
    directories: list[Path], pid: int, uid: int, *, started_at: float | None = None
) -> tuple[int, Path]:
    """The service's side: a read-only, non-blocking descriptor on the dump of worker
    ``pid`` (real uid ``uid``, started at ``started_at``, unix seconds), from the first
    of ``directories`` that has a usable one. Raises DumpPathError with every reason a
    candidate was passed over."""
    refused: list[str] = []
    fuse_mounts = _fuse_mounts()
    for directory in directories:
        try:
            fd = _open_one(directory, pid, uid, started_at, fuse_mounts)
            return fd, directory / dump_file_name(pid)
        except FileNotFoundError:
            continue
        except DumpPathError as error:
            refused.append(str(error))
        except OSError as error:
            refused.append(f"{directory / dump_file_name(pid)}: {error.strerror}")
    if refused:
        raise DumpPathError("; ".join(refused))
    looked = ", ".join(str(directory) for directory in directories)
    raise DumpPathError(f"the worker has no dump file (looked in {looked})")
