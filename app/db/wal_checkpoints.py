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

A PASSIVE checkpoint never shrinks the WAL file, and under a steady stream of commits
the WAL may never start over: each commit appends whole pages (a timer's arm and
release, about 50 KB), so a user arming and releasing in a loop grew it by hundreds of
megabytes in seconds (issue 20). Past ``max_wal_bytes``, the round runs a TRUNCATE
checkpoint instead: it waits (within the busy timeout) for the readers and the writer
to let go, copies everything, and cuts the file to zero.
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app import log_names
from app.ops.periodic import Periodic

__all__ = ["MAX_WAL_BYTES", "WalCheckpoints"]

logger = logging.getLogger(log_names.WAL_CHECKPOINTS)

# A WAL file larger than this is truncated at the next round (see above).
MAX_WAL_BYTES = 64 << 20


class WalCheckpoints:
    def __init__(
        self, engine: Engine, interval: float = 1.0, max_wal_bytes: int = MAX_WAL_BYTES
    ) -> None:
        self._engine = engine
        database = engine.url.database
        self._wal = f"{database}-wal" if database and database != ":memory:" else None
        self._max_wal_bytes = max_wal_bytes
        self.truncations = 0
        self._rounds = Periodic(
            "timer-checkpoints", interval, self.checkpoint, on_error=self._failed
        )
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
        mode = "TRUNCATE" if self.wal_bytes() > self._max_wal_bytes else "PASSIVE"
        with self._engine.connect() as connection:
            busy = connection.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})").scalar()
        if mode == "TRUNCATE" and not busy:
            self.truncations += 1

    def wal_bytes(self) -> int:
        """The WAL file's size (0 if there is none)."""
        try:
            return os.stat(self._wal).st_size if self._wal else 0
        except OSError:
            return 0

    def _failed(self, error: Exception) -> None:
        if not isinstance(error, SQLAlchemyError):
            raise error  # logged with its traceback by Periodic
        # The recorder reports an unwritable database; the WAL keeps every commit
        # meanwhile, and the next checkpoint copies it.
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            logger.warning("WAL checkpoint failed (%d so far): %s", self.failures, error)
