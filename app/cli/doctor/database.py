"""The database: does it open, where are its migrations, is there disk for it, and (on
PostgreSQL) does this host's clock agree with the server's?

Nothing is created: a missing SQLite file is left missing (the service makes it), and
its directory is proven writable by making and removing one empty file of doctor's
own. An existing database is opened as the service opens it (``make_engine``) and only
read. A password in the URL is never printed (``masked_url``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, inspect

from app.db.database import MIGRATIONS_DIR, make_engine
from app.db.database_status import masked_url, one_line, unreachable_message
from app.db.db_file_check import DatabaseFileError, check_database_file
from app.db.private_files import sqlite_path
from app.settings import Settings

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


def _writable(directory: Path) -> str | None:
    """Why no file can be made in ``directory`` (by making and removing one), or None."""
    name = directory / f".timer-service-doctor-{secrets.token_hex(6)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(name, flags, 0o600))
    except OSError as error:
        return error.strerror or str(error)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


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


def _open(settings: Settings) -> list[Result]:
    """Open it as the service does, and read its migrations (and the server's clock)."""
    shown = masked_url(settings.db_url)
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
    why = _writable(directory) if directory.is_dir() else "not a directory"
    if why is not None:
        found = f"cannot write in {directory}, where the database {path} goes: {why}"
        return [Result("database", Status.FAIL, found, _ELSEWHERE), _disk(path, settings)]
    if not path.exists():
        found = f"{path} does not exist yet: made at start, in a writable directory"
        return [Result("database", Status.OK, found), _disk(path, settings)]
    try:
        check_database_file(settings.db_url)
    except DatabaseFileError as error:
        found = str(error).removeprefix("timer-service: ")
        return [Result("database", Status.FAIL, found, "move it away or point --db-url elsewhere")]
    return [*_open(settings), _disk(path, settings)]


CHECKS = [
    Check(
        "database",
        check_database,
        15.0,
        "the database does not answer: check that its server runs (pg_isready) or that "
        "the SQLite file's disk is not a hung network mount",
    )
]
