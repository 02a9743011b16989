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
import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine, bindparam, insert, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from timer_core import TimerEvent
from timer_core.events import END_KINDS, EventKind

from .models import Event, Timer

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

_BATCH_MAX = 5000
_RETRY_SECONDS = 0.5

_timers = Timer.__table__  # type: ignore[attr-defined]
_events = Event.__table__  # type: ignore[attr-defined]


class Recorder:
    def __init__(self, engine: Engine, *, buffer_size: int = 100_000) -> None:
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
        while True:
            with self._lock:
                while not self._buffer and not self._stopping:
                    self._arrived.wait()
                if self._stopping and not self._buffer:
                    return
            if not self._write_one_batch():
                if self._stopping:
                    return
                time.sleep(_RETRY_SECONDS)

    def _write_one_batch(self) -> bool:
        """Write up to one batch. False if there was nothing to write or the write failed."""
        with self._lock:
            batch = [self._buffer[i] for i in range(min(len(self._buffer), _BATCH_MAX))]
        if not batch:
            return False
        try:
            self._write(batch)
        except IntegrityError:
            # One bad event must not block the rest forever: write them one by one.
            self._write_singly(batch)
        except SQLAlchemyError as error:
            self.write_errors += 1
            cause = getattr(error, "orig", None) or error
            reason = f"database write failed: {type(error).__name__}: {cause}"
            if reason != self.last_error:
                logger.error("%s; %d events buffered, retrying", reason, len(self._buffer))
            self.last_error = reason
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

    def _write_singly(self, batch: list[TimerEvent]) -> None:
        for event in batch:
            try:
                self._write([event])
            except IntegrityError as error:
                self.rejected += 1
                logger.error("event %d (%s) cannot be recorded: %s", event.seq, event.kind, error)

    def _write(self, batch: list[TimerEvent]) -> None:
        new_timers: list[dict[str, Any]] = []
        changes: dict[int, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
