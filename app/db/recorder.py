"""Writes timer events to the database in batches on its own thread (group commit).

The reaper never waits on the disk: events are handed over through a buffer.
Writers of the REST API wait (asynchronously) until every event up to theirs is
committed (``commit_watermark``), so a 201 means the acquisition is on disk.
While the database cannot be written, events stay in the buffer and are retried.

No event of a timer is ever dropped: the buffer is kept bounded from the other end,
where work comes in (``backpressure``: the FIFOs are not read and new HTTP
acquisitions get 503 while the recorder is behind). Only ``refused`` events, which
change no timer, are dropped beyond the bound (counted and logged), since requests
the service turns away could otherwise fill it.

An event the database refuses (a value it cannot hold) is set aside alone: a failed
batch is split in halves until the bad event stands by itself, so one bad event
costs a few extra transactions, not one per event. Text the database cannot encode
(a lone surrogate) is escaped then, and the event recorded. Otherwise, if it was a
timer's acquisition, the timer's later events are still written, unlinked, instead of
each failing the foreign key in its turn.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, TextClause, text
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from app import log_names
from app.db import store
from app.db.commit_watermark import CommitWatermark
from app.db.database_status import one_line
from app.db.event_rows import write_events
from app.db.history_quota import HistoryQuota
from app.db.incident_rows import IncidentRecorder
from app.db.unencodable import encodable, escaped
from app.db.wal_checkpoints import WalCheckpoints
from timer_core import TimerEvent
from timer_core.engine import EventKind

__all__ = ["Recorder"]

logger = logging.getLogger(log_names.RECORDER)

_BATCH_MAX = 5000
_RETRY_SECONDS = 0.5
# Events nobody waits for (the FIFO's clients never wait for a commit; an HTTP write
# does) are gathered until this long after the last commit. Each commit rewrites the
# same few table and index pages whatever it holds, so more events per commit is less
# disk per event: under 600 FIFO events/s, 3.3 pages (13.6 KB) an event with a commit
# every 11 ms, 1.5 pages (6.0 KB) when gathered (bench/wal_growth.py).
_GATHER_SECONDS = 0.05
# Errors of the data, not of the disk: retrying cannot help, so the event is set aside.
# (A value too big for its column: SQLite's driver raises OverflowError before sending
# it, PostgreSQL refuses it with a DataError.)
_DATA_ERRORS = (IntegrityError, DataError, ValueError, TypeError, OverflowError)
# Timers whose acquisition could not be written, remembered so that their later events
# are written unlinked; a few are enough (each means a value the database cannot hold).
_UNRECORDED_MAX = 10_000

_PRUNE_CHUNK = 10_000
_PRUNE_EVENTS = text(
    "DELETE FROM events WHERE id IN ("
    " SELECT events.id FROM events LEFT JOIN timers ON timers.id = events.timer_id"
    " WHERE events.at < :cutoff AND (timers.state IS NULL OR timers.state != 'active')"
    f" LIMIT {_PRUNE_CHUNK})"
)
_PRUNE_TIMERS = text(
    "DELETE FROM timers WHERE id IN ("
    " SELECT id FROM timers WHERE state != 'active' AND ended_at < :cutoff"
    " AND NOT EXISTS (SELECT 1 FROM events WHERE events.timer_id = timers.id)"
    f" LIMIT {_PRUNE_CHUNK})"
)
# An incident goes with the retention of its opening; its captures (stacks) first.
_PRUNE_INCIDENT_CAPTURES = text(
    "DELETE FROM incident_captures WHERE id IN ("
    " SELECT incident_captures.id FROM incident_captures"
    " JOIN incidents ON incidents.id = incident_captures.incident_id"
    f" WHERE incidents.opened_at < :cutoff LIMIT {_PRUNE_CHUNK})"
)
_PRUNE_INCIDENTS = text(
    "DELETE FROM incidents WHERE id IN ("
    " SELECT id FROM incidents WHERE opened_at < :cutoff AND NOT EXISTS"
    " (SELECT 1 FROM incident_captures WHERE incident_captures.incident_id = incidents.id)"
    f" LIMIT {_PRUNE_CHUNK})"
)


# A job (an id and its owner) goes once nothing of it is left: no timer, no incident (a
# job id is any string a worker chose, so their number has no bound but the history's).
_PRUNE_JOBS = text(
    "DELETE FROM jobs WHERE (job_id, uid) IN ("
    " SELECT job_id, uid FROM jobs WHERE last_seen < :cutoff"
    " AND NOT EXISTS (SELECT 1 FROM timers WHERE timers.job_id = jobs.job_id"
    "  AND coalesce(timers.uid, -1) = jobs.uid)"
    " AND NOT EXISTS (SELECT 1 FROM incidents WHERE incidents.job_id = jobs.job_id"
    "  AND coalesce(incidents.uid, -1) = jobs.uid)"
    f" LIMIT {_PRUNE_CHUNK})"
)


class Recorder:
    def __init__(
        self,
        engine: Engine,
        *,
        buffer_size: int = 100_000,
        retention_seconds: float | None = None,
        prune_interval: float = 3600.0,
        incidents: IncidentRecorder | None = None,
        also: Sequence[Callable[[Connection, list[TimerEvent]], None]] = (),
        committed: Sequence[Callable[[], None]] = (),
    ) -> None:
        """``also``: more writers of each batch, in its transaction, after the incidents
        (the notification outbox, ``app.notify.outbox``); ``committed``: told after each
        batch's commit (the outbox wakes its sender, which then sees the new rows)."""
        self._engine = engine
        self._incidents = incidents
        self._also = tuple(also)
        self._committed = tuple(committed)
        self._buffer: collections.deque[TimerEvent] = collections.deque()
        self._buffer_size = buffer_size
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.watermark = CommitWatermark()
        # Beside the writer, so that no batch waits for a checkpoint.
        self.checkpoints = WalCheckpoints(engine)
        self._unrecorded: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.dropped = 0
        self.commits = 0
        self.write_errors = 0
        self.rejected = 0
        self.pruned_events = 0
        self.pruned_timers = 0
        self._retention_seconds = retention_seconds
        self._prune_interval = prune_interval
        self._next_prune = time.monotonic()
        # --max-db-size, checked on this thread too (watch_size).
        self._quota: HistoryQuota | None = None
        self._quota_interval = 10.0
        self._next_quota = time.monotonic()
        self.last_error: str | None = None
        # When the batch being written started (monotonic), or None: a batch that waits
        # long is a database that hangs (app.db.database_status).
        self.busy_since: float | None = None
        # Whether an event someone waits for (an HTTP request's) is buffered: then the
        # next batch goes at once, not after _GATHER_SECONDS.
        self._awaited = False
        self._committed_at = 0.0

    # ---- the listener side (event bus thread) ----------------------------------------------

    def __call__(self, event: TimerEvent) -> None:
        with self._lock:
            full = len(self._buffer) >= self._buffer_size
            if not full or event.kind != EventKind.REFUSED:
                # A timer's events are never dropped: the sources stop taking work in
                # instead, so beyond the bound there are only the events of timers
                # already armed (each ends once).
                self._buffer.append(event)
                if event.timer.source == "http":
                    self._awaited = True
                self._arrived.notify()
                return
            self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            logger.error(
                "recorder buffer full (%d events): %d refused-request events dropped so far",
                self._buffer_size,
                self.dropped,
            )
        self.watermark.finish((event.seq,))

    def backlog(self) -> int:
        return len(self._buffer)

    def backlog_age(self) -> float:
        """Seconds since the oldest event still waiting to be written happened (0 if none)."""
        with self._lock:
            oldest = self._buffer[0].at if self._buffer else None
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    @property
    def buffer_size(self) -> int:
        return self._buffer_size

    @property
    def committed_seq(self) -> int:
        """Every event numbered up to this is written (or was set aside for good)."""
        return self.watermark.value

    @property
    def degraded_reason(self) -> str | None:
        return self.last_error

    # ---- the request side ------------------------------------------------------------------

    async def wait_committed(self, seq: int, timeout: float) -> bool:
        """True once event ``seq`` (and every earlier one) is committed; False on timeout."""
        return await self.watermark.wait(seq, timeout)

    # ---- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="timer-recorder", daemon=True)
        self._thread.start()
        self.checkpoints.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered (within ``timeout``), then stop."""
        with self._lock:
            self._stopping = True
            self._arrived.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.checkpoints.stop()

    def flush(self) -> None:
        """Write everything buffered now, on the caller's thread (tests, shutdown)."""
        while self._write_one_batch():
            pass

    def _run(self) -> None:
        # Nothing may end this thread but stop(): every event after it would be lost.
        while True:
            try:
                if not self._run_once():
                    return
            except Exception:
                logger.exception("recorder loop error; continuing")
                time.sleep(_RETRY_SECONDS)

    def _run_once(self) -> bool:
        """Wait for work and do one batch. False once stopped and drained."""
        with self._lock:
            while not self._buffer and not self._stopping and not self._prune_due():
                self._arrived.wait(self._until_prune())
            if self._stopping and not self._buffer:
                return False
            self._gather()
        if self._prune_due():
            self._prune_safely()
        if not self._write_one_batch():
            if self._stopping:
                return False
            if self._buffer:  # the write failed: retry at the retry's pace
                time.sleep(_RETRY_SECONDS)
        return True

    def _gather(self) -> None:
        """(Under the lock.) Let events nobody waits for gather into one commit, up to
        ``_GATHER_SECONDS`` after the last one; at once for an awaited event, a full
        batch, a stop, or a database in trouble (the retry has its own pace)."""
        until = self._committed_at + _GATHER_SECONDS
        while (
            not self._awaited
            and not self._stopping
            and self.last_error is None
            and len(self._buffer) < _BATCH_MAX
        ):
            left = until - time.monotonic()
            if left <= 0:
                return
            self._arrived.wait(left)

    def _write_one_batch(self) -> bool:
        """Write up to one batch. False if there was nothing to write or the write failed."""
        with self._lock:
            batch = list(itertools.islice(self._buffer, _BATCH_MAX))
            if len(batch) == len(self._buffer):
                self._awaited = False  # what anyone waits for is in this batch
        if not batch:
            return False
        self.busy_since = time.monotonic()
        try:
            self._write_isolating(batch)
        except SQLAlchemyError as error:
            self.write_errors += 1
            # One line (the driver's message), as /healthz and the log show it.
            reason = f"database write failed: {one_line(error)}"
            if reason != self.last_error:
                logger.error("%s; %d events buffered, retrying", reason, len(self._buffer))
            self.last_error = reason
            # A connection can stay broken after the fault is gone (SQLite keeps a
            # file opened read-only so): retry on fresh connections.
            self._engine.dispose()
            return False
        finally:
            self.busy_since = None
            self._committed_at = time.monotonic()
        if self.last_error is not None:
            logger.warning("database writable again; recording resumed")
        self.last_error = None
        return True

    def _write_isolating(self, batch: list[TimerEvent]) -> None:
        """Write ``batch`` (the buffer's front), in order. On an error of the data, split
        it in halves until the bad event stands alone and is set aside. Each part is
        taken off the buffer as soon as it is done, so if the disk fails half-way
        through, only what is left is retried, never written twice."""
        try:
            self._write(batch)
        except _DATA_ERRORS as error:
            if len(batch) > 1:
                middle = len(batch) // 2
                self._write_isolating(batch[:middle])
                self._write_isolating(batch[middle:])
                return
            self._set_aside(batch[0], error)
        else:
            self.commits += 1
        self._done(batch)

    def _set_aside(self, event: TimerEvent, error: Exception) -> None:
        """An event the database refused. Text it cannot encode (a lone surrogate) is
        escaped and the event written again: recorded, not lost. Otherwise, if its
        timer is not in the database, the timer is remembered as unrecorded and the
        event written once more, unlinked."""
        if not encodable(event):
            event = escaped(event)
            try:
                self._write([event])
            except _DATA_ERRORS as again:
                error = again
            else:
                logger.error(
                    "event %d (%s) of timer %s held text that cannot be encoded as UTF-8: "
                    "recorded with it escaped (%s)",
                    event.seq,
                    event.kind,
                    event.timer_id,
                    error,
                )
                return
        timer_id = event.timer_id
        if timer_id is not None and timer_id not in self._unrecorded:
            with self._engine.connect() as connection:
                known = store.timer_recorded(connection, timer_id)
            if not known:
                # The timer itself is lost to the database, whatever becomes of its
                # events: counted and logged, so the service says so.
                self.rejected += 1
                self._unrecorded[timer_id] = None
                if len(self._unrecorded) > _UNRECORDED_MAX:
                    self._unrecorded.popitem(last=False)
                logger.error(
                    "timer %d cannot be recorded (its events are kept unlinked): %s",
                    timer_id,
                    error,
                )
                try:
                    self._write([event])
                    return
                except _DATA_ERRORS as again:
                    error = again
        self.rejected += 1
        logger.error("event %d (%s) cannot be recorded: %s", event.seq, event.kind, error)

    def _done(self, batch: list[TimerEvent]) -> None:
        with self._lock:
            for event in batch:
                # Checked, not assumed: a flush() racing a writer thread that outlived
                # stop()'s wait must not take off events nobody wrote.
                if self._buffer and self._buffer[0].seq == event.seq:
                    self._buffer.popleft()
        self.watermark.finish(event.seq for event in batch)

    # ---- retention (on this thread: SQLite has one writer) ----------------------------------

    def watch_size(self, quota: HistoryQuota | None, interval: float) -> None:
        """Enforce ``quota`` (--max-db-size) every ``interval`` seconds, on this thread."""
        self._quota = quota
        self._quota_interval = interval

    def _prune_due(self) -> bool:
        now = time.monotonic()
        return (self._retention_seconds is not None and now >= self._next_prune) or (
            self._quota is not None and now >= self._next_quota
        )

    def _until_prune(self) -> float | None:
        waits = []
        if self._retention_seconds is not None:
            waits.append(self._next_prune)
        if self._quota is not None:
            waits.append(self._next_quota)
        return max(0.0, min(waits) - time.monotonic()) if waits else None

    def _prune_safely(self) -> None:
        now = time.monotonic()
        if self._quota is not None and now >= self._next_quota:
            self._next_quota = now + self._quota_interval
            try:
                self._quota.enforce()
            except SQLAlchemyError as error:
                logger.error("checking --max-db-size failed (will retry): %s", error)
        if self._retention_seconds is None or now < self._next_prune:
            return
        self._next_prune = now + self._prune_interval
        try:
            events, timers = self.prune(time.time() - self._retention_seconds)
        except SQLAlchemyError as error:
            logger.error("pruning old events failed (will retry): %s", error)
            return
        if events or timers:
            logger.info("pruned %d events and %d ended timers past retention", events, timers)

    def prune(self, cutoff: float) -> tuple[int, int]:
        """Delete events before ``cutoff`` (unix) except those of active timers, then the
        ended timers left with no events. In chunks, so no transaction holds the
        database for long. Returns (events, timers) deleted."""
        deleted_events = self._delete_in_chunks(_PRUNE_EVENTS, cutoff)
        deleted_timers = self._delete_in_chunks(_PRUNE_TIMERS, cutoff)
        self._delete_in_chunks(_PRUNE_INCIDENT_CAPTURES, cutoff)
        self._delete_in_chunks(_PRUNE_INCIDENTS, cutoff)
        self._delete_in_chunks(_PRUNE_JOBS, cutoff)
        self.pruned_events += deleted_events
        self.pruned_timers += deleted_timers
        return deleted_events, deleted_timers

    def _delete_in_chunks(self, statement: TextClause, cutoff: float) -> int:
        """Run a chunked DELETE until it deletes less than a chunk; how many in all."""
        deleted = 0
        while True:
            with self._engine.begin() as connection:
                count = connection.execute(statement, {"cutoff": cutoff}).rowcount
            deleted += count
            if count < _PRUNE_CHUNK:
                return deleted

    def _write(self, batch: list[TimerEvent]) -> None:
        with self._engine.begin() as connection:
            write_events(connection, batch, self._unrecorded)
            if self._incidents is not None:
                self._incidents.record(connection, batch)
            for write in self._also:
                write(connection, batch)
        for tell in self._committed:
            tell()
