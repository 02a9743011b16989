"""The database: engine set-up (SQLite in WAL mode, or PostgreSQL), migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["MIGRATIONS_DIR", "POOL_CONNECTIONS", "make_engine", "migrate"]


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


def make_engine(db_url: str, busy_timeout: float = 5.0) -> Engine:
    is_sqlite = db_url.startswith("sqlite")
    options: dict[str, Any] = {}
    if not (is_sqlite and make_url(db_url).database in (None, "", ":memory:")):
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
        if make_url(db_url).get_backend_name() == "postgresql":
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
    engine = create_engine(db_url, **options)
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


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (run at every start)."""
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
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
