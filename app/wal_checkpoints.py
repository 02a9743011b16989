"""SQLite WAL checkpoints on a thread of their own, off the commit path.

By default, the connection whose commit takes the WAL past 1,000 pages runs the
checkpoint itself, inside that commit: it copies the pages into the database file
and fsyncs both files. For the recorder, one batch in a hundred or so then took tens
of milliseconds longer, and every request waiting for that batch with it (the HTTP
benchmark's p99, docs/benchmarks.md). So ``app.db`` turns automatic checkpoints off,
and this thread runs a PASSIVE checkpoint every ``interval`` seconds instead: it waits
for no reader and no writer, and the recorder goes on appending to the WAL meanwhile.

Durability is unchanged: a commit is in the WAL either way (``synchronous=NORMAL``
syncs the WAL at checkpoints), and a checkpoint now comes within a second of a write
instead of after 1,000 pages of them.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from .periodic import Periodic

__all__ = ["WalCheckpoints"]

logger = logging.getLogger(__name__)


class WalCheckpoints:
    def __init__(self, engine: Engine, interval: float = 1.0) -> None:
        self._engine = engine
        self._rounds = Periodic("timer-checkpoints", interval, self.checkpoint, self._failed)
        self.failures = 0

    def start(self) -> None:
        if self._engine.dialect.name == "sqlite":
            self._rounds.start()

    @property
    def running(self) -> bool:
        """Only on SQLite: other databases checkpoint on their own."""
        return self._rounds.running

    def stop(self, timeout: float = 10.0) -> None:
        self._rounds.stop(timeout)

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, as far as no reader needs it."""
        with self._engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def _failed(self, error: Exception) -> None:
        if not isinstance(error, SQLAlchemyError):
            raise error  # logged with its traceback by Periodic
        # The recorder reports an unwritable database; the WAL keeps every commit
        # meanwhile, and the next checkpoint copies it.
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            logger.warning("WAL checkpoint failed (%d so far): %s", self.failures, error)
