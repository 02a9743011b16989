"""The database: engine set-up (SQLite in WAL mode), migrations, sessions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlmodel import Session

from alembic import command

__all__ = ["ALEMBIC_INI", "make_engine", "migrate", "session_scope"]

logger = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def make_engine(db_url: str) -> Engine:
    is_sqlite = db_url.startswith("sqlite")
    options: dict[str, Any] = {}
    if is_sqlite:
        # One writer thread plus request threads share the file; WAL lets readers
        # run while the recorder commits.
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(db_url, **options)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives a crash of this process (SIGKILL);
    # only an OS crash or power loss can lose the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
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


def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session
