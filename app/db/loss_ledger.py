"""Events the service lost, kept in the database until an operator acknowledges them.

The recorder counts what it drops (a full buffer) and what the database refuses, but
those counters start at zero with each process: after a restart ``/healthz`` would say
``ok`` as if nothing had been lost. The ledger turns each increase into a row of the
``losses`` table, and ``/healthz`` stays ``degraded`` while any row is unacknowledged
(``POST /losses/acknowledge``).

Its own thread watches the counters and writes the rows: a loss usually comes with a
database that cannot be written, and neither the supervisor nor a request may wait on
it. Until a row is written the loss is pending, and counted as unacknowledged all the
same. A crash before it is written loses the marker too: the log line the recorder
wrote at the time remains.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from app import log_names
from app.db import store
from app.db.models import Loss
from app.ops.periodic import Periodic

__all__ = ["LossLedger"]

logger = logging.getLogger(log_names.LOSS_LEDGER)

_WHAT = {
    "dropped": "events dropped by a full recorder buffer",
    "rejected": "events the database refused to store",
}


class LossLedger:
    def __init__(
        self,
        engine: Engine,
        counters: Callable[[], dict[str, int]],
        *,
        interval: float = 0.5,
        also: Callable[[Connection, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        """``counters()`` gives the loss counters since this process started, by kind
        (``dropped``, ``rejected``); they only ever grow. ``also`` is handed the
        transaction and the rows it writes (the service's outbox tells the loss)."""
        self._engine = engine
        self._counters = counters
        self._interval = interval
        self._also = also
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._pending: list[dict[str, Any]] = []
        self._stored = 0  # unacknowledged events in the database
        self._rounds = Periodic("timer-losses", interval, self._round)

    # ---- reading -------------------------------------------------------------------------

    def load(self) -> None:
        """Read what earlier runs lost and nobody acknowledged (at start)."""
        with self._engine.connect() as connection:
            stored = store.unacknowledged_losses(connection)
        with self._lock:
            self._stored = stored

    def unacknowledged(self) -> int:
        """Events lost and not acknowledged: in the database, or still to be written."""
        with self._lock:
            return self._stored + sum(int(row["count"]) for row in self._pending)

    def problem(self) -> str | None:
        lost = self.unacknowledged()
        if not lost:
            return None
        return (
            f"{lost} events lost and not acknowledged (GET /losses says which; an "
            "operator acknowledges them with POST /losses/acknowledge)"
        )

    def rows(self, limit: int = 100) -> list[Loss]:
        with Session(self._engine) as session:
            return store.latest_losses(session, limit)

    # ---- watching and writing ------------------------------------------------------------

    def observe(self) -> None:
        """Turn any growth of the counters into pending rows."""
        now = time.time()
        counters = self._counters()
        with self._lock:
            for kind, value in counters.items():
                grown = value - self._seen.get(kind, 0)
                if grown > 0:
                    detail = f"{grown} {_WHAT.get(kind, kind)}"
                    self._pending.append(
                        {"at": now, "kind": kind, "count": grown, "detail": detail}
                    )
                    self._seen[kind] = value

    def flush(self) -> bool:
        """Write the pending rows; False (they stay pending) if the database refuses."""
        with self._lock:
            rows = list(self._pending)
        if not rows:
            return True
        try:
            with self._engine.begin() as connection:
                store.insert_losses(connection, rows)
                if self._also is not None:
                    self._also(connection, rows)
        except SQLAlchemyError as error:
            logger.debug("loss markers not written yet (%s); will retry", error)
            return False
        with self._lock:
            del self._pending[: len(rows)]
            self._stored += sum(int(row["count"]) for row in rows)
        logger.error("recorded a loss: %s", "; ".join(row["detail"] for row in rows))
        return True

    def acknowledge(self, by: str) -> int:
        """Mark every loss so far as seen; returns how many events that covered."""
        self.observe()
        if not self.flush():
            raise SQLAlchemyError("the database cannot be written; try again")
        with self._engine.begin() as connection:
            covered = store.acknowledge_losses(connection, time.time(), by)
        self.load()  # what the thread may have written meanwhile stays unacknowledged
        logger.warning("%d lost events acknowledged by %s", covered, by)
        return covered

    # ---- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._rounds.start()

    def stop(self) -> None:
        """Stop the thread, then record what was lost up to now (at shutdown)."""
        self._rounds.stop()
        self.observe()
        self.flush()

    def _round(self) -> None:
        self.observe()
        self.flush()
