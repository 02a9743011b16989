"""Writes timer events to the database in batches on its own thread (group commit).

The reaper never waits on the disk: events are handed over through a bounded
buffer. Writers of the REST API wait (asynchronously) until their event's
sequence number is committed, so a 201 means the acquisition is on disk.
While the database cannot be written, events stay in the buffer and are
retried; beyond the buffer's bound the oldest are dropped, counted and logged.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine, bindparam, insert, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from timer_core import TimerEvent
from timer_core.events import END_KINDS, EventKind

from .models import Event, Stack, Timer

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

_BATCH_MAX = 5000
_RETRY_SECONDS = 0.5

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

_timers = Timer.__table__  # type: ignore[attr-defined]
_events = Event.__table__  # type: ignore[attr-defined]
_stacks = Stack.__table__  # type: ignore[attr-defined]


class Recorder:
    def __init__(
        self,
        engine: Engine,
        *,
        buffer_size: int = 100_000,
        retention_seconds: float | None = None,
        prune_interval: float = 3600.0,
    ) -> None:
        self._engine = engine
        self._buffer: collections.deque[TimerEvent] = collections.deque()
        self._buffer_size = buffer_size
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.committed_seq = 0
        self.dropped = 0
        self.commits = 0
        self.write_errors = 0
        self.rejected = 0
        self.pruned_events = 0
        self.pruned_timers = 0
        self._retention_seconds = retention_seconds
        self._prune_interval = prune_interval
        self._next_prune = time.monotonic()
        self.last_error: str | None = None
        self._waiters: list[tuple[int, asyncio.Future[None], asyncio.AbstractEventLoop]] = []

    # ---- the listener side (event bus thread) ----------------------------------------------

    def __call__(self, event: TimerEvent) -> None:
        with self._lock:
            if len(self._buffer) >= self._buffer_size:
                lost = self._buffer.popleft()
                self.dropped += 1
                logger.error(
                    "recorder buffer full (%d events): dropped event %d (%s of timer %s)",
                    self._buffer_size,
                    lost.seq,
                    lost.kind,
                    lost.timer_id,
                )
            self._buffer.append(event)
            self._arrived.notify()

    def backlog(self) -> int:
        return len(self._buffer)

    @property
    def degraded_reason(self) -> str | None:
        return self.last_error

    # ---- the request side ------------------------------------------------------------------

    async def wait_committed(self, seq: int, timeout: float) -> bool:
        """True once event ``seq`` (and every earlier one) is committed; False on timeout."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.committed_seq >= seq:
                return True
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((seq, future, loop))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False

    # ---- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="timer-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered (within ``timeout``), then stop."""
        with self._lock:
            self._stopping = True
            self._arrived.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

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
        if self._prune_due():
            self._prune_safely()
        if not self._write_one_batch():
            if self._stopping:
                return False
            time.sleep(_RETRY_SECONDS)
        return True

    def _write_one_batch(self) -> bool:
        """Write up to one batch. False if there was nothing to write or the write failed."""
        with self._lock:
            batch = list(itertools.islice(self._buffer, _BATCH_MAX))
        if not batch:
            return False
        try:
            self._write(batch)
        except (IntegrityError, ValueError, TypeError, OverflowError):
            # The data, not the disk: one bad event must not block the rest forever,
            # so write them one by one and reject only the one that cannot be stored.
            self._write_singly(batch)
        except SQLAlchemyError as error:
            self.write_errors += 1
            cause = getattr(error, "orig", None) or error
            reason = f"database write failed: {type(error).__name__}: {cause}"
            if reason != self.last_error:
                logger.error("%s; %d events buffered, retrying", reason, len(self._buffer))
            self.last_error = reason
            # A connection can stay broken after the fault is gone (SQLite keeps a
            # file opened read-only so): retry on fresh connections.
            self._engine.dispose()
            return False
        with self._lock:
            # Drop exactly what was written; anything dropped meanwhile from the
            # front for lack of room was counted then.
            written = {event.seq for event in batch}
            while self._buffer and self._buffer[0].seq in written:
                self._buffer.popleft()
            self.committed_seq = max(self.committed_seq, batch[-1].seq)
            self.commits += 1
            if self.last_error is not None:
                logger.warning("database writable again; recording resumed")
            self.last_error = None
            ready = [w for w in self._waiters if w[0] <= self.committed_seq]
            self._waiters = [w for w in self._waiters if w[0] > self.committed_seq]
        for _, future, loop in ready:
            loop.call_soon_threadsafe(_resolve, future)
        return True

    # ---- retention (on this thread: SQLite has one writer) ----------------------------------

    def _prune_due(self) -> bool:
        return self._retention_seconds is not None and time.monotonic() >= self._next_prune

    def _until_prune(self) -> float | None:
        if self._retention_seconds is None:
            return None
        return max(0.0, self._next_prune - time.monotonic())

    def _prune_safely(self) -> None:
        self._next_prune = time.monotonic() + self._prune_interval
        assert self._retention_seconds is not None
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
        deleted_events = deleted_timers = 0
        while True:
            with self._engine.begin() as connection:
                count = connection.execute(_PRUNE_EVENTS, {"cutoff": cutoff}).rowcount
            deleted_events += count
            if count < _PRUNE_CHUNK:
                break
        while True:
            with self._engine.begin() as connection:
                count = connection.execute(_PRUNE_TIMERS, {"cutoff": cutoff}).rowcount
            deleted_timers += count
            if count < _PRUNE_CHUNK:
                break
        self.pruned_events += deleted_events
        self.pruned_timers += deleted_timers
        return deleted_events, deleted_timers

    def _write_singly(self, batch: list[TimerEvent]) -> None:
        for event in batch:
            try:
                self._write([event])
            except (IntegrityError, ValueError, TypeError, OverflowError) as error:
                self.rejected += 1
                logger.error("event %d (%s) cannot be recorded: %s", event.seq, event.kind, error)

    def _write(self, batch: list[TimerEvent]) -> None:
        new_timers: list[dict[str, Any]] = []
        changes: dict[int, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        stacks: list[dict[str, Any]] = []
        for event in batch:
            if event.kind == EventKind.ACQUIRED:
                new_timers.append(
                    {
                        "id": event.timer_id,
                        "pid": event.pid,
                        "scope_id": event.scope_id,
                        "signal": event.signal,
                        "source": event.source,
                        "state": "active",
                        "acquired_at": event.acquired_at,
                        "expiration_time": event.expiration_time,
                        "process_create_time": event.process_create_time,
                        "uid": event.process_uid,
                        "dump_signal": event.dump_signal,
                    }
                )
            elif event.kind == EventKind.EXTENDED and event.timer_id is not None:
                changes.setdefault(event.timer_id, {}).update(
                    expiration_time=event.expiration_time, signal=event.signal
                )
            elif event.kind in END_KINDS and event.timer_id is not None:
                changes.setdefault(event.timer_id, {}).update(
                    state=event.state,
                    ended_at=event.at,
                    end_reason=event.reason(),
                )
            if event.stack is not None and event.timer_id is not None:
                stacks.append(
                    {
                        "timer_id": event.timer_id,
                        "method": event.stack.method,
                        "captured_at": event.at,
                        "seconds": event.stack.seconds,
                        "truncated": event.stack.truncated,
                        "notes": list(event.stack.notes),
                        "text": event.stack.text,
                    }
                )
            rows.append(
                {
                    "timer_id": event.timer_id,
                    "kind": event.kind,
                    "at": event.at,
                    "pid": event.pid,
                    "scope_id": event.scope_id,
                    "source": event.source,
                    "detail": event.detail,
                }
            )
        with self._engine.begin() as connection:
            if new_timers:
                connection.execute(insert(_timers), new_timers)
            by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for timer_id, values in changes.items():
                by_columns.setdefault(tuple(sorted(values)), []).append(
                    {"timer_id": timer_id, **values}
                )
            for columns, params in by_columns.items():
                statement = (
                    update(_timers)
                    .where(_timers.c.id == bindparam("timer_id"))
                    .values({column: bindparam(column) for column in columns})
                )
                connection.execute(statement, params)
            connection.execute(insert(_events), rows)
            if stacks:
                connection.execute(insert(_stacks), stacks)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
