"""The database: engine set-up (SQLite in WAL mode, or PostgreSQL), migrations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

__all__ = [
    "MIGRATIONS_DIR",
    "POOL_CONNECTIONS",
    "DatabaseUrlError",
    "Migration",
    "MigrationError",
    "make_engine",
    "migrate",
    "usable_url",
]


# Shipped inside the package, so a wheel or a non-editable install can migrate too.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# PostgreSQL advisory lock key held while migrating (any constant no one else uses).
_MIGRATION_LOCK = 0x7469_6D65_7273  # "timers"
# libpq's connect_timeout (whole seconds): well within /healthz's 10 s.
_CONNECT_TIMEOUT_SECONDS = 3
# The pool's connections: SQLAlchemy's defaults (5 kept, 10 more on demand), made
# explicit because HTTP reads may hold only a few of them at once (app.access.reader_slots):
# the rest stay free for the recorder, the heartbeat, checkpoints and health probes.
_POOL_SIZE = 5
_POOL_OVERFLOW = 10
POOL_CONNECTIONS = _POOL_SIZE + _POOL_OVERFLOW


# The databases the service keeps its data in; the URL says which.
_BACKENDS = ("sqlite", "postgresql")
_URL_FORMS = (
    "give sqlite:///PATH (embedded, the default) or postgresql+psycopg://USER@HOST/DB "
    "(pip install 'timer-service[postgres]')"
)


class DatabaseUrlError(RuntimeError):
    """A database URL this service cannot use: the message says which forms it takes."""


class MigrationError(RuntimeError):
    """The database's schema cannot be brought to this version's: the message says why
    and what to do."""


def usable_url(db_url: str) -> URL:
    """``db_url`` parsed, or ``DatabaseUrlError`` if it is not SQLite's or PostgreSQL's."""
    # Named as the setting, not echoed: a URL that does not parse may hold a password
    # where the masking cannot find it.
    try:
        url = make_url(db_url)
    except ArgumentError:
        raise DatabaseUrlError(
            f"the database URL (--db-url, TIMER_SERVICE_DB_URL) is not a URL; {_URL_FORMS}"
        ) from None
    if url.get_backend_name() not in _BACKENDS:
        raise DatabaseUrlError(
            f"the database URL's scheme {url.drivername!r} is not one this service keeps "
            f"its data in; {_URL_FORMS}"
        )
    return url


def make_engine(db_url: str, busy_timeout: float = 5.0) -> Engine:
    """The engine for ``db_url``; ``DatabaseUrlError`` (one line, what to give) for a URL
    that is not SQLite's or PostgreSQL's, or whose driver is not installed."""
    url = usable_url(db_url)
    is_sqlite = url.get_backend_name() == "sqlite"
    options: dict[str, Any] = {}
    if not (is_sqlite and url.database in (None, "", ":memory:")):
        # (An in-memory SQLite database has a pool of one connection per thread.)
        options.update(pool_size=_POOL_SIZE, max_overflow=_POOL_OVERFLOW)
    if is_sqlite:
        # One writer thread plus request threads share the file; WAL lets readers
        # run while the recorder commits.
        options["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout}
    else:
        # A shared server restarts, fails over, or drops idle connections: a pooled
        # connection is checked before use rather than failing the batch that takes it.
        options["pool_pre_ping"] = True
        if url.get_backend_name() == "postgresql":
            # A server that hangs (stopped, its host gone) refuses nothing: without a
            # bound, a new connection would wait for it forever. Over TCP, keepalives
            # drop a connection to a vanished host in ~25 s instead of the kernel's 2 h.
            options["connect_args"] = {
                "connect_timeout": _CONNECT_TIMEOUT_SECONDS,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            }
    try:
        engine = create_engine(db_url, **options)
    except (NoSuchModuleError, ImportError) as error:  # an unknown or missing driver
        raise DatabaseUrlError(
            f"the database URL's driver {url.drivername!r} cannot be loaded ({error}); {_URL_FORMS}"
        ) from None
    if is_sqlite:
        timeout_ms = int(busy_timeout * 1000)
        event.listen(engine, "connect", lambda conn, rec: _sqlite_pragmas(conn, timeout_ms))
    return engine


def _sqlite_pragmas(connection: Any, busy_timeout_ms: int) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives a crash of this process (SIGKILL);
    # only an OS crash or power loss can lose the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints run on a thread of their own (app.db.wal_checkpoints), not inside the
    # commit that happens to fill the WAL: that one commit stalled its whole batch.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.close()


@dataclass(frozen=True, slots=True)
class Migration:
    """The schema's revision before and after ``migrate``; None before: a new database."""

    before: str | None
    after: str | None

    def line(self) -> str:
        """What the migrations did, in one line for the log."""
        if self.before == self.after:
            return f"database at {self.after}, up to date"
        if self.before is None:
            return f"database created at {self.after}"
        return f"database migrated from {self.before} to {self.after}"


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> Migration:
    """Bring the schema to the newest migration (run at every start); where it was and
    is now. ``MigrationError`` for a database this version cannot migrate (a newer
    version's)."""
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise SystemExit(
            f"migrations not found in {MIGRATIONS_DIR}: this installation is incomplete; "
            "reinstall it with: pip install --force-reinstall timer-service"
        )
    # No alembic.ini is needed at run time: the service passes its own connection.
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Nodes sharing one database start together: one migrates, the others wait
            # for it (the lock ends with this transaction) and then find nothing to do.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        before = _revision(connection)
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as error:  # a revision this version does not know
            raise MigrationError(
                f"the database {engine.url.render_as_string(hide_password=True)} is at "
                f"revision {before}, which this timer-service does not know ({error}): a "
                "newer timer-service migrated it; run that version (or a newer one) here, "
                "or point --db-url at another database"
            ) from None
        return Migration(before, _revision(connection))
