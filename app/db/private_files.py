"""The SQLite database is private: it holds every stack the service captured (function
names, file paths, kernel stacks of root's processes) and who armed what.

Before SQLite touches it, at each start:

- The database's directory, and every one above it, must belong to root or the
  service's uid and be writable by nobody else (``timer_core.safe_dirs``): otherwise
  another user could swap the database, or plant its ``-wal`` or ``-journal``. A
  missing directory is made 0700 (each missing level), by descriptor.
- A missing database file is created 0600 with ``os.open``, whatever the umask. SQLite
  gives its ``-wal`` and ``-shm`` files the mode of the database file, so they are
  0600 too.
- An existing database (and ``-wal``, ``-shm``, ``-journal``) that group or others could
  read or write is tightened to 0600, with a WARNING saying so: refusing to start would
  stop the watchdog over a mode, and tightening loses nothing.
- A database path that is a symbolic link, or not a regular file, is refused: the
  service (often root) would otherwise change the mode of, or open, whatever file the
  link names; in a shared directory anyone could plant one.

Only for SQLite file URLs: other databases, in-memory SQLite and ``file:`` URI names
are left to their own settings.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from app import log_names
from timer_core.safe_dirs import UnsafeDirectoryError, open_directory

__all__ = ["secure_sqlite_files", "sqlite_path"]

logger = logging.getLogger(log_names.PRIVATE_FILES)

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_SIDE_FILES = ("-wal", "-shm", "-journal")


def sqlite_path(db_url: str) -> Path | None:
    """The file behind an SQLite URL; None for another database or no file."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _refuse(db_url: str, why: str) -> RuntimeError:
    return RuntimeError(
        f"cannot open or write the database {db_url}: {why}. "
        "Check that its directory exists and is writable, or pass another --db-url."
    )


def _make_directory(directory: Path) -> None:
    """Each missing level 0700, made and set by descriptor below directories only root
    or the service's uid can change (``timer_core.safe_dirs``)."""
    existed = directory.is_dir()
    os.close(open_directory(directory, "the database's directory", make=(0o700, 0o700)))
    if not existed:
        logger.info("made the database directory %s (mode 0700)", directory)


def _private(path: Path, db_url: str, *, create: bool) -> None:
    try:
        fd = os.open(path, _FLAGS | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        if create:
            raise
        return
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _refuse(db_url, f"{path} is a symbolic link; give the file's real path") from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise _refuse(db_url, f"{path} is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            try:
                os.fchmod(fd, 0o600)
            except PermissionError:  # not ours, and we are not root: say what to do
                logger.warning(
                    "%s can be read by other users (mode %04o) and is not ours to change: "
                    "run chmod 600 %s",
                    path,
                    mode,
                    path,
                )
            else:
                logger.warning(
                    "%s could be read by other users (mode %04o): tightened to 0600", path, mode
                )
    finally:
        os.close(fd)


def secure_sqlite_files(db_url: str) -> None:
    """Make the database's directory, file and side files private (see the module)."""
    path = sqlite_path(db_url)
    if path is None:
        return
    try:
        _make_directory(path.parent)
        _private(path, db_url, create=True)
        for suffix in _SIDE_FILES:
            _private(path.with_name(path.name + suffix), db_url, create=False)
    except UnsafeDirectoryError as error:
        raise RuntimeError(f"cannot use the database {db_url}: {error}") from None
    except OSError as error:
        raise _refuse(db_url, error.strerror or str(error)) from None
