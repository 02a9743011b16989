"""A look at the SQLite file before the service starts on it.

A file that is not a database (garbage, another program's file, a half-copied one)
would otherwise fail deep inside the migrations, in a 148-line traceback; an empty one
(a truncated copy, ``: > timer-service.db``) would start as a new database and quietly
forget every timer the old one held. So, before anything opens it:

- not a database: one message naming the file and what to do, and the CLI exits
  non-zero (``DatabaseFileError``);
- empty: one WARNING line, and the service starts on a new database.

Only the first bytes are read, from a descriptor opened without following links and
without blocking (a FIFO planted there cannot hang the start); a path that is a link or
not a regular file is left to ``private_files``, which refuses it.
"""

from __future__ import annotations

import logging
import os
import stat

from app import log_names
from app.db.private_files import sqlite_path

__all__ = ["SQLITE_HEADER", "DatabaseFileError", "check_database_file"]

logger = logging.getLogger(log_names.DB_FILE_CHECK)

# Every SQLite 3 database starts with these 16 bytes (https://sqlite.org/fileformat.html).
SQLITE_HEADER = b"SQLite format 3\x00"
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class DatabaseFileError(RuntimeError):
    """The database file cannot be used; the message says which and what to do."""


def check_database_file(db_url: str) -> None:
    """Refuse a file that is not an SQLite database; warn about an empty one."""
    path = sqlite_path(db_url)
    if path is None:
        return
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return  # missing (made later), a link, unreadable: private_files says what to do
    try:
        status = os.fstat(fd)
        head = os.pread(fd, len(SQLITE_HEADER), 0) if stat.S_ISREG(status.st_mode) else None
    except OSError:
        head = None
    finally:
        os.close(fd)
    if head is None:
        return
    if status.st_size == 0:
        logger.warning(
            "the database %s is empty (0 bytes): starting with a new database, so no timer "
            "is re-armed; if it held timers, stop the service and restore it",
            path,
        )
    elif head != SQLITE_HEADER:
        raise DatabaseFileError(
            f"timer-service: {path} is not a SQLite database (file is not a database: it "
            f"does not start with {SQLITE_HEADER[:15].decode()!r}); move it away or point "
            "--db-url elsewhere"
        )
