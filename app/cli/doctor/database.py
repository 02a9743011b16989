"""The database: does it open, where are its migrations, is there disk for it, and (on
PostgreSQL) does this host's clock agree with the server's?

Nothing is written, made or converted: doctor runs as root beside other users, and
a database path may lead where they point it. So:

- a missing SQLite file is left missing (the service makes it); its directory's being
  writable is asked of the kernel (``access``, and a read-only mount), not tried;
- an existing file is opened only if it is a regular file (not a link) in a directory
  only root or the service's uid can change (``safe_dirs``, as ``serve`` insists),
  and then read-only: with no ``-wal`` beside it as ``immutable`` (SQLite makes no
  ``-wal``/``-shm``), else ``mode=ro``. ``make_engine``'s ``journal_mode=WAL`` would
  have rewritten a database that is not in WAL mode, or an empty file, and the close
  of the last connection checkpoints;
- a server's database (PostgreSQL) is opened as the service opens it and only read.

A password in the URL is never printed (``masked_url``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import time
import urllib.parse
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, inspect

from app.db.database import MIGRATIONS_DIR, make_engine
from app.db.database_status import masked_url, one_line, unreachable_message
from app.db.db_file_check import DatabaseFileError, check_database_file
from app.db.private_files import sqlite_path
from app.settings import Settings
from timer_core.safe_dirs import check_directory

from .results import Check, Result, Status

__all__ = ["CHECKS", "NEARLY_FULL_BYTES"]

# Below this free on the SQLite file's filesystem, writes fail soon ("database or disk
# is full"): the recorder's batches, the WAL and its checkpoints all need room.
NEARLY_FULL_BYTES = 64 << 20
_SIDE_FILES = ("", "-wal", "-shm", "-journal")
_BUSY_SECONDS = 2.0
# On a fleet, GET /nodes compares each node's heartbeat time with its own clock.
_SKEW_WARN_SECONDS = 1.0
_ELSEWHERE = (
    "point --db-url at a directory on a local, writable disk, e.g. "
    "sqlite:////var/lib/timer-service/timer-service.db"
)


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _unwritable(directory: Path) -> str | None:
    """Why the service could make no file in ``directory``, or None; asked, not tried."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
    except OSError as error:
        return error.strerror or str(error)
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        return os.strerror(errno.EACCES)
    return None


def _read_only_engine(path: Path) -> Engine:
    """An engine that reads ``path`` and can make, convert or write nothing."""
    quoted = urllib.parse.quote(str(path))
    # No -wal: nothing is in one, and immutable makes none (nor -shm, nor locks).
    mode = "mode=ro" if path.with_name(path.name + "-wal").exists() else "immutable=1"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{quoted}?{mode}", uri=True, timeout=_BUSY_SECONDS, check_same_thread=False
        )

    return create_engine("sqlite://", creator=connect)


def _migrations(connection: Connection) -> Result:
    name = "migrations"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    heads = set(script.get_heads())
    current = set(MigrationContext.configure(connection).get_current_heads())
    shown_head = ", ".join(sorted(heads))
    if not current:
        tables = inspect(connection).get_table_names()
        if tables:
            found = f"it has tables ({', '.join(sorted(tables)[:5])}) but no alembic_version"
            fix = "it is not a timer-service database: point --db-url elsewhere"
            return Result(name, Status.FAIL, found, fix)
        return Result(name, Status.OK, f"a new database: made at start (to {shown_head})")
    if current == heads:
        return Result(name, Status.OK, f"at {shown_head}, this version's newest")
    shown = ", ".join(sorted(current))
    try:
        for revision in current:
            if script.get_revision(revision) is None:
                raise CommandError(revision)
    except CommandError:
        found = f"at {shown}, which this timer-service (newest {shown_head}) does not know"
        fix = (
            "a newer timer-service migrated it: run that version here too (upgrade this "
            "node), or restore the backup taken before that upgrade; see docs/operations.md"
        )
        return Result(name, Status.FAIL, found, fix)
    found = f"at {shown}, behind this version's {shown_head}: migrated at start"
    fix = "back it up before the first start (docs/operations.md, Backups)"
    return Result(name, Status.WARN, found, fix)


def _skew(connection: Connection) -> Result:
    before = time.time()
    server = connection.exec_driver_sql("SELECT extract(epoch from clock_timestamp())").scalar()
    after = time.time()
    skew = float(server or 0) - (before + after) / 2
    side = "behind" if skew > 0 else "ahead of"
    found = f"this host's clock is {abs(skew):.2f} s {side} the server's"
    if abs(skew) <= _SKEW_WARN_SECONDS + (after - before) / 2:
        return Result("clock vs database", Status.OK, found)
    fix = (
        "synchronise every node and the database server with NTP (chrony, "
        "systemd-timesyncd): a fleet judges nodes up or down by their heartbeat times"
    )
    return Result("clock vs database", Status.WARN, found, fix)


def _open(settings: Settings, sqlite_file: Path | None = None) -> list[Result]:
    """Open it (an SQLite file read-only, a server as the service does), and read its
    migrations (and the server's clock)."""
    shown = masked_url(settings.db_url)
    if sqlite_file is not None:
        engine = _read_only_engine(sqlite_file)
    else:
        engine = make_engine(settings.db_url, busy_timeout=_BUSY_SECONDS)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
            results = [Result("database", Status.OK, f"{shown} opens")]
            results.append(_migrations(connection))
            if connection.dialect.name == "postgresql":
                results.append(_skew(connection))
            return results
    except Exception as error:
        if sqlite_path(settings.db_url) is not None:
            found = f"cannot open the database {shown}: {one_line(error)}"
            return [Result("database", Status.FAIL, found, _ELSEWHERE)]
        found, _, fix = unreachable_message(settings.db_url, error).partition("; ")
        return [Result("database", Status.FAIL, found, fix)]
    finally:
        engine.dispose()


def _disk(path: Path, settings: Settings) -> Result:
    name = "disk space"
    where = _nearest_existing(path.parent)
    try:
        info = os.statvfs(where)
    except OSError as error:
        found = f"cannot stat {where}: {one_line(error)}"
        return Result(name, Status.WARN, found, f"run df {where} by hand to see why")
    free = info.f_bavail * info.f_frsize
    used = 0
    for suffix in _SIDE_FILES:
        with contextlib.suppress(OSError):
            used += path.with_name(path.name + suffix).stat().st_size
    if free < NEARLY_FULL_BYTES:
        found = (
            f"only {_size(free)} free on the filesystem of {where}: the database's writes "
            "fail soon ('database or disk is full'), and events wait in memory meanwhile"
        )
        fix = f"free space on that filesystem, or {_ELSEWHERE}"
        return Result(name, Status.FAIL, found, fix)
    room = free + used
    limit = settings.max_db_size
    if limit and room < limit:
        found = (
            f"{_size(free)} free and the database holds {_size(used)}: it would fill the "
            f"disk before --max-db-size {_size(limit)} starts pruning"
        )
        fix = f"set --max-db-size below {_size(room * 0.8)} (e.g. {int(room * 0.8) >> 20}M)"
        return Result(name, Status.WARN, found, fix)
    shown_limit = f"--max-db-size {_size(limit)}" if limit else "no --max-db-size"
    return Result(
        name, Status.OK, f"{_size(free)} free for {_size(used)} of database ({shown_limit})"
    )


def check_database(settings: Settings) -> list[Result]:
    path = sqlite_path(settings.db_url)
    path = None if path is None else path.absolute()
    if path is None:
        if settings.db_url.startswith("sqlite"):
            found = (
                f"{masked_url(settings.db_url)} is in memory: all history is lost at each restart"
            )
            fix = "give it a file: --db-url sqlite:////var/lib/timer-service/timer-service.db"
            return [Result("database", Status.WARN, found, fix)]
        return _open(settings)
    directory = _nearest_existing(path.parent)
    why = _unwritable(directory) if directory.is_dir() else "not a directory"
    if why is not None:
        found = f"cannot write in {directory}, where the database {path} goes: {why}"
        return [Result("database", Status.FAIL, found, _ELSEWHERE), _disk(path, settings)]
    try:
        kind = os.lstat(path).st_mode
    except FileNotFoundError:
        found = f"{path} does not exist yet: made at start, in a writable directory"
        return [Result("database", Status.OK, found), _disk(path, settings)]
    except OSError as error:
        found = f"cannot look at {path}: {error.strerror or error}"
        return [Result("database", Status.FAIL, found, _ELSEWHERE)]
    refused = _not_to_open(path, kind)
    if refused is not None:
        return [Result("database", Status.FAIL, *refused)]
    try:
        check_database_file(settings.db_url)
    except DatabaseFileError as error:
        found = str(error).removeprefix("timer-service: ")
        return [Result("database", Status.FAIL, found, "move it away or point --db-url elsewhere")]
    return [*_open(settings, path), _disk(path, settings)]


def _not_to_open(path: Path, kind: int) -> tuple[str, str] | None:
    """(why ``path`` must not be opened, what to do), or None: the service refuses to
    start on it too."""
    if stat.S_ISLNK(kind):
        found = f"not opened: {path} is a symbolic link, which the service refuses at start"
        return found, "give the file's real path in --db-url"
    if not stat.S_ISREG(kind):
        found = f"not opened: {path} is not a regular file, which the service refuses at start"
        return found, "move it away or point --db-url elsewhere"
    try:
        check_directory(path.parent, "the database's directory")
    except OSError as error:
        # Another user could swap the file for a link between any look and the open.
        found, _, advice = str(error).partition("; use ")
        return f"not opened: {found}", f"use {advice}" if advice else _ELSEWHERE
    return None


CHECKS = [
    Check(
        "database",
        check_database,
        15.0,
        "the database does not answer: check that its server runs (pg_isready) or that "
        "the SQLite file's disk is not a hung network mount",
    )
]
