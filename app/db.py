"""The database: engine set-up (SQLite in WAL mode), migrations, sessions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

from alembic import command

__all__ = ["ALEMBIC_INI", "make_engine", "migrate"]

logger = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def make_engine(db_url: str, busy_timeout: float = 5.0) -> Engine:
    is_sqlite = db_url.startswith("sqlite")
    options: dict[str, Any] = {}
    if is_sqlite:
        # One writer thread plus request threads share the file; WAL lets readers
        # run while the recorder commits.
        options["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout}
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
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (run at every start)."""
    if not ALEMBIC_INI.exists():
        raise SystemExit(
            f"migrations not found at {ALEMBIC_INI}; install the project in editable mode "
            "from its checkout: pip install -e ."
        )
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.parent / "alembic"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
