"""``--max-db-size``: the recorded history kept below a size, oldest pruned first.

Run on the recorder's thread (SQLite has one writer), every few seconds: measure what
the database holds; above the limit, prune the oldest history (events of ended timers,
the ended timers, incidents: never an active timer) a step at a time until it is under
90% of the limit. If only active timers are left and it is still over, the history is
full: new arms and heartbeats of non-exempt users are refused (429, counted in
``timer_refusals_total{reason="history_full"}``) until it is under again.

A step prunes no more than the bytes still over the target: if the prunable events
are N of the U bytes measured, E bytes over, a step takes the oldest N * E / U of them
(at most ``STEP_EVENTS``, at least one). They hold at most U bytes together, so that
many hold at most E on average; the measure after each step says whether another is
needed. A step that took "the oldest thousand" could take all of a small history
when only a little had to go.

What is measured is what pruning can free, not the file's size:

- SQLite never shrinks its file after a DELETE without VACUUM (which rewrites the
  whole file and holds the lock meanwhile); it reuses the freed pages. So the measure
  is the pages in use, ``(page_count - freelist_count) * page_size``: pruning brings it
  down at once, and new rows fill the freed pages before the file grows again. The WAL
  is not counted: the checkpoints (``wal_checkpoints``) keep it bounded.
- PostgreSQL likewise reuses the space of deleted rows after a (auto)vacuum, but its
  files stay at their high-water mark. The measure is the live rows' bytes, as the
  planner's statistics estimate them (``reltuples`` times the row width), brought up to
  date by an ANALYZE of the history tables once they say the limit is near.
  Indexes are not counted. Several nodes sharing the database each enforce the limit
  on the whole of it (pruning is idempotent).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from app import log_names
from timer_core.engine.user_share import UserShare

__all__ = ["STEP_EVENTS", "HistoryQuota"]

logger = logging.getLogger(log_names.HISTORY_QUOTA)

# Prune down to this share of the limit, so that one crossing does not prune again at
# every check.
_TARGET = 0.9
# Events pruned per step (oldest first); steps per check, so one check cannot hold the
# recorder's thread (and the writes waiting behind it) for long.
STEP_EVENTS = 1000
_STEPS_PER_CHECK = 200

# On PostgreSQL, above this share of the limit by the standing statistics, the
# measure runs an ANALYZE first: it reads a bounded sample (300 x
# default_statistics_target rows) of each table, whatever its size.
_ANALYZE_FROM = 0.5

_HISTORY_TABLES = ("timers", "events", "stacks", "incidents", "incident_captures", "jobs")

# Events of ended timers (or of none): what a step prunes, oldest first.
_PRUNABLE_EVENTS = (
    " FROM events LEFT JOIN timers ON timers.id = events.timer_id"
    " WHERE (timers.state IS NULL OR timers.state != 'active')"
)
# The first time after the step's last event (prune_before takes what is older): events
# at the same time as that one go too, so every step prunes at least ``step`` events.
# NULL when no more than the step is left: then all of it may go.
_STEP_CUTOFF = text(
    f"SELECT events.at {_PRUNABLE_EVENTS} AND events.at > ("
    f" SELECT events.at {_PRUNABLE_EVENTS} ORDER BY events.at LIMIT 1 OFFSET :before_last)"
    " ORDER BY events.at LIMIT 1"
)
# Counted up to what one check can prune: a bound on the work of the count, and a
# lower bound of the prunable events, which only makes the steps smaller.
_COUNT_PRUNABLE = text(
    f"SELECT count(*) FROM (SELECT 1 {_PRUNABLE_EVENTS} LIMIT :most) AS prunable"
)
_ANY_PRUNABLE = text(f"SELECT 1 {_PRUNABLE_EVENTS} LIMIT 1")
_ANY_ENDED_TIMER = text("SELECT 1 FROM timers WHERE state != 'active' LIMIT 1")
_ANY_INCIDENT = text("SELECT 1 FROM incidents LIMIT 1")


class HistoryQuota:
    def __init__(
        self,
        engine: Engine,
        max_bytes: int,
        prune_before: Callable[[float], tuple[int, int]],
        share: UserShare,
        *,
        step_events: int = STEP_EVENTS,
    ) -> None:
        """``prune_before(cutoff)``: the recorder's retention prune, which deletes the
        history older than ``cutoff`` (unix) and never an active timer. Each step
        prunes the history up to the ``step_events``-th oldest event."""
        self._engine = engine
        self._step_events = step_events
        self.max_bytes = max_bytes
        self._prune_before = prune_before
        self._share = share
        self.used_bytes: int | None = None

    def measure(self) -> int:
        """The bytes the history holds now (see the module's docstring)."""
        with self._engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                return _sqlite_used(connection)
            # The statistics autovacuum keeps are at most about a tenth behind: fresh
            # ones (an ANALYZE) are asked for only when they say the limit is near.
            used = _postgres_used(connection)
            if used is not None and used < self.max_bytes * _ANALYZE_FROM:
                return used
            connection.exec_driver_sql(f"ANALYZE {', '.join(_HISTORY_TABLES)}")
            return _postgres_used(connection) or 0

    def enforce(self) -> None:
        """One check: prune oldest first while over, and say whether the history is full."""
        used = self.used_bytes = self.measure()
        if used <= self.max_bytes:
            self._set_full(None)
            return
        target = int(self.max_bytes * _TARGET)
        with self._engine.connect() as connection:
            prunable = connection.execute(
                _COUNT_PRUNABLE, {"most": self._step_events * _STEPS_PER_CHECK}
            ).scalar_one()
        measured, events, timers = used, 0, 0
        for _ in range(_STEPS_PER_CHECK):
            step = min(self._step_events, max(1, math.ceil(prunable * (used - target) / used)))
            pruned = self._prune_step(step)
            if pruned is None:
                break
            events, timers = events + pruned[0], timers + pruned[1]
            prunable = max(0, prunable - pruned[0])
            used = self.used_bytes = self.measure()
            if used <= target:
                break
        if events or timers:
            # One line a check, however many steps it took.
            logger.warning(
                "the database held %d bytes, over --max-db-size (%d bytes): pruned the "
                "oldest %d events and %d ended timers, %d bytes now",
                measured,
                self.max_bytes,
                events,
                timers,
                used,
            )
        if used <= self.max_bytes:
            self._set_full(None)
            return
        self._set_full(
            f"the database holds {used} bytes, over --max-db-size {self.max_bytes}, and "
            "no ended history is left to prune: release or end timers, or raise "
            "--max-db-size; retry later"
        )

    def _prune_step(self, step: int) -> tuple[int, int] | None:
        """Prune the oldest ``step`` events of ended timers (and what is as old: their
        timers, incidents, jobs): the events and timers pruned, None if nothing was left."""
        with self._engine.connect() as connection:
            cutoff = connection.execute(_STEP_CUTOFF, {"before_last": step - 1}).scalar()
            if cutoff is None and not any(
                connection.execute(query).first() is not None
                for query in (_ANY_PRUNABLE, _ANY_ENDED_TIMER, _ANY_INCIDENT)
            ):
                return None
        # No more than a step left: all of it (up to now; nothing recorded is later).
        return self._prune_before(time.time() + 1 if cutoff is None else float(cutoff))

    def _set_full(self, reason: str | None) -> None:
        if (reason is None) != (self._share.history_full is None):
            if reason is None:
                logger.warning("the database is under --max-db-size again; writes accepted")
            else:
                logger.error("%s", reason)
        self._share.history_full = reason


def _sqlite_used(connection: Connection) -> int:
    pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
    free = connection.exec_driver_sql("PRAGMA freelist_count").scalar_one()
    size = connection.exec_driver_sql("PRAGMA page_size").scalar_one()
    return int((pages - free) * size)


def _postgres_used(connection: Connection) -> int | None:
    """The live rows' bytes as the planner's statistics say: ``reltuples`` times the
    row's width, per history table; None while a table was never analysed."""
    rows = connection.execute(
        text(
            "SELECT c.reltuples, coalesce((SELECT sum(s.avg_width) FROM pg_stats s"
            "  WHERE s.schemaname = n.nspname AND s.tablename = c.relname), 0)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            " AND c.relname = ANY(:tables)"
        ),
        {"tables": list(_HISTORY_TABLES)},
    ).all()
    if any(tuples < 0 for tuples, _ in rows):
        return None
    # A heap tuple's header (23 bytes, aligned to 24) and its line pointer (4).
    return int(sum(tuples * (width + 28) for tuples, width in rows))
