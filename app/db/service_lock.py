"""One live service per database and node: a second ``timer-service serve`` on the same
SQLite file, or with the same ``--node-name`` on a shared PostgreSQL database, would
re-arm the first one's live timers as its own, and both would signal the same workers.
So a node service holds a lock for its whole life, taken before it migrates or re-arms
anything, and a second one is refused at start, told which pid and host hold it.

- **SQLite**: a POSIX record lock (``lockf``) on ``<database>.lock`` beside the file,
  made 0600 and opened without following a link; the holder writes its pid, host and
  node into it. SQLite serves one node: any second service on the file is refused.
- **PostgreSQL**: a session-level advisory lock keyed by the schema and node name, on a
  connection of its own held open for the service's life. Its ``application_name``
  carries the holder's pid and host, which ``pg_stat_activity`` shows to the one refused.

Either lock is the kernel's or the server's, not a row: it goes with its holder's
process (or session), so a service that crashed leaves nothing to clean up, and the
next one takes over. The hub (``serve --hub``) arms nothing and takes no lock.

Within one process, POSIX locks never conflict (tests run several in-process nodes
on one SQLite file); between processes, they do, which is what this guards.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import socket
import stat
import time
from pathlib import Path

from sqlalchemy import Connection, Engine, NullPool, create_engine, text

from app import log_names
from app.db.private_files import sqlite_path

__all__ = ["ServiceLock", "ServiceLockError", "node_lock_key"]

logger = logging.getLogger(log_names.SERVICE_LOCK)

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
# PostgreSQL keeps at most 63 bytes of an application_name.
_APP_NAME_BYTES = 63


class ServiceLockError(RuntimeError):
    """Another live service holds this database (or node); the message says which."""


def node_lock_key(node: str) -> int:
    """The advisory lock key of ``node`` (``schema/name``): a signed 64-bit hash."""
    digest = hashlib.blake2b(f"timer-service node {node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _holder_line(node: str) -> str:
    return f"pid {os.getpid()} on host {socket.gethostname()} (node {node})"


class ServiceLock:
    def __init__(self, engine: Engine, db_url: str, node: str) -> None:
        self._engine = engine
        self._db_url = db_url
        self._node = node
        self._fd: int | None = None
        self._connection: Connection | None = None
        self._lock_engine: Engine | None = None
        # PostgreSQL: held by a session, which the server may lose (check()).
        self._advisory = False
        # Set while another service holds this node after our session was lost.
        self.problem: str | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None or self._connection is not None

    def acquire(self) -> None:
        """Take the lock, or raise ``ServiceLockError`` naming its holder; once held,
        again is a no-op (the CLI takes it before the app starts, the app makes sure)."""
        if self.held:
            return
        path = sqlite_path(self._db_url)
        if path is not None:
            self._acquire_file(path)
        elif self._engine.dialect.name == "postgresql":
            self._acquire_advisory()

    def release(self) -> None:
        if self._fd is not None:
            # Emptied first: a record left in the file means its holder never released.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None
        self._advisory = False
        self._drop_session()

    def check(self) -> None:
        """PostgreSQL: the lock lives as long as its session. A session lost (the server
        restarted, the connection was killed) is opened again and the lock taken again;
        if another service took this node meanwhile, ``problem`` says so (and it is
        logged once). Every few seconds, on a thread of its own: it may wait on the
        database, never on the kill path."""
        if not self._advisory:
            return
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                return
            except Exception:
                self._drop_session()
        try:
            self._acquire_advisory()
        except ServiceLockError as error:
            if self.problem != str(error):
                logger.critical("the node lock was lost with its session: %s", error)
            self.problem = str(error)
            return
        except Exception:
            return  # the database is still away: the next round tries again
        if self.problem is not None:
            logger.warning("took the node lock of %r again", self._node)
        else:
            logger.info("the node lock's session was lost; took the lock again")
        self.problem = None

    def _drop_session(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()  # the session's end drops its advisory lock
            self._connection = None
        if self._lock_engine is not None:
            self._lock_engine.dispose()
            self._lock_engine = None

    # ---- SQLite --------------------------------------------------------------------------

    def _acquire_file(self, database: Path) -> None:
        path = database.with_name(database.name + ".lock")
        try:
            fd = os.open(path, _FLAGS, 0o600)
        except OSError as error:
            why = "it is a symbolic link" if error.errno == errno.ELOOP else error.strerror
            raise ServiceLockError(
                f"cannot open the lock file {path}: {why}; remove it, or choose another --db-url"
            ) from None
        try:
            _check_lock_file(fd, path)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_record(fd) or "a process that wrote no record"
                raise ServiceLockError(
                    f"the database {database} is in use by another timer-service: {holder}. "
                    "Stop that one first, or give this one another --db-url (for several "
                    "nodes, use PostgreSQL: docs/fleet.md)"
                ) from None
            previous = _read_record(fd)
            if previous:
                logger.warning(
                    "taking over %s from %s, which stopped without releasing it (crashed?)",
                    database,
                    previous,
                )
            os.ftruncate(fd, 0)
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            os.pwrite(fd, f"{_holder_line(self._node)} since {since}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    # ---- PostgreSQL ----------------------------------------------------------------------

    def _acquire_advisory(self) -> None:
        name = f"timer-service pid {os.getpid()} on {socket.gethostname()}"
        name = name.encode()[:_APP_NAME_BYTES].decode(errors="ignore")
        # A connection of its own, outside the pool: it is held for the service's life.
        engine = create_engine(
            self._engine.url, poolclass=NullPool, connect_args={"application_name": name}
        )
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            # Advisory locks are per database: the schema in use is part of the key, as
            # two schemas are two separate sets of tables.
            schema = connection.execute(text("SELECT current_schema()")).scalar()
            key = node_lock_key(f"{schema}/{self._node}")
            taken = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            if not taken:
                holder = _advisory_holder(connection, key, self._node)
                raise ServiceLockError(
                    f"the node name {self._node!r} is in use on this database by another "
                    f"timer-service: {holder}. Stop that one first, or give this one "
                    "another --node-name"
                )
        except BaseException:
            connection.close()
            engine.dispose()
            raise
        self._connection, self._lock_engine = connection, engine
        self._advisory = True


def _check_lock_file(fd: int, path: Path) -> None:
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        raise ServiceLockError(f"the lock file {path} is not a regular file; remove it")
    if found.st_uid != os.geteuid():
        raise ServiceLockError(
            f"the lock file {path} belongs to uid {found.st_uid}, not to the service "
            f"(uid {os.geteuid()}); remove it"
        )
    if stat.S_IMODE(found.st_mode) != 0o600:
        os.fchmod(fd, 0o600)


def _read_record(fd: int) -> str:
    return os.pread(fd, 512, 0).decode(errors="replace").strip()


def _advisory_holder(connection: Connection, key: int, node: str) -> str:
    """Who holds ``key``, as far as this role may see: the holder's application_name
    (its pid and host) and the node's last heartbeat."""
    unsigned = key % (1 << 64)
    said: list[str] = []
    with contextlib.suppress(Exception):
        row = connection.execute(
            text(
                "SELECT a.application_name, a.client_addr FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid = :high AND l.objid = :low "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
        ).first()
        if row is not None and row[0]:
            said.append(str(row[0]) + (f" (client {row[1]})" if row[1] else ""))
    with contextlib.suppress(Exception):
        last_seen = connection.execute(
            text("SELECT last_seen FROM nodes WHERE name = :n"), {"n": node}
        ).scalar()
        if last_seen is not None:
            said.append(f"last heartbeat {max(0.0, time.time() - float(last_seen)):.0f} s ago")
    return ", ".join(said) or "a live session of this database"
