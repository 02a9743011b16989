"""How a batch of timer events becomes rows, written in one transaction: each
acquisition inserts its timer, later events update it, every event is a row of the
event log, and captured stacks get rows of their own.

The SQL is SQLite's, multi-row, and goes straight to the driver
(``exec_driver_sql``, so errors still arrive as SQLAlchemy's). Two reasons, both
measured under load (docs/benchmarks.md): the Core layers' per-row work cost more
than the write itself, and the driver releases the GIL for every statement it steps
(every row, with ``executemany``), then has to win it back from the busy event loop.
So a batch is a handful of statements, one per table and change, not one per row.

PostgreSQL (``--db-url postgresql+psycopg://...``) gets as few statements, each in
the way that suits it (docs/benchmarks.md, section 10):

- new rows (timers, events, stacks) go by ``COPY ... FROM STDIN``, its bulk load;
- the updates of timers by one ``UPDATE ... FROM unnest(%s::type[], ...)``: one
  array parameter per column, typed (a column of nulls has no type of its own), and
  one statement text that psycopg prepares once;
- the jobs upsert as on SQLite, with ``greatest()`` for SQLite's two-argument
  ``max()`` (both take ``INSERT ... ON CONFLICT``).

SQLite's statements are exactly what they were.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.exc import DBAPIError

from app.db.job_models import job_owner
from app.db.models import SNAPSHOT_FIELDS, Event, Stack, Timer, timer_values
from timer_core import Timer as TimerSnapshot
from timer_core import TimerEvent
from timer_core.engine import END_KINDS, EventKind
from timer_core.engine.event_details import JsonObject

__all__ = ["write_events"]

# UPDATE ... FROM came with SQLite 3.33; before it, one UPDATE per row.
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)


@dataclass(frozen=True)
class _Dialect:
    """What differs in the batch SQL between the two databases."""

    placeholder: str
    max_variables: int  # bound parameters per statement
    greatest: str  # the larger of two values
    update_from: bool
    # PostgreSQL: rows go as one array per column, unnested by the server (below).
    # Per table and column, the SQL type of those arrays' elements.
    arrays: dict[str, dict[str, str]]


_SQLITE = _Dialect(
    placeholder="?",
    # SQLite's limit before 3.32, so any SQLite takes it.
    max_variables=999,
    greatest="max",
    update_from=_UPDATE_FROM,
    arrays={},
)
_PG: Dialect = PGDialect()  # type: ignore[no-untyped-call]
_POSTGRES = _Dialect(
    placeholder="%s",
    # The protocol counts parameters in 16 bits.
    max_variables=65_535,
    greatest="greatest",
    update_from=True,
    arrays={
        model.__tablename__: {
            column.name: column.type.compile(dialect=_PG)
            for column in model.__table__.columns  # type: ignore[union-attr]
        }
        for model in (Timer, Event, Stack)
    },
)

# What an acquisition inserts: every column the engine's snapshot has a value for.
_TIMER_COLUMNS = tuple(
    column.name
    for column in Timer.__table__.columns  # type: ignore[attr-defined]
    if column.name in SNAPSHOT_FIELDS
)
_EVENT_COLUMNS = ("timer_id", "kind", "at", "pid", "scope_id", "source", "detail", "node")
_STACK_COLUMNS = ("timer_id", "method", "captured_at", "seconds", "truncated", "notes", "text")

Row = tuple[Any, ...]


def write_events(
    connection: Connection, batch: list[TimerEvent], unrecorded: Container[int]
) -> None:
    """Write ``batch`` in order. Events of a timer in ``unrecorded`` (its acquisition
    could not be written) go to the event log unlinked: linked, they would fail the
    foreign key, and take their whole batch with them."""
    new_timers: list[Row] = []
    changes: dict[int, dict[str, Any]] = {}
    events: list[Row] = []
    stacks: list[Row] = []
    # (job, owner) → [world_size, first_seen, last_seen]
    jobs: dict[tuple[str, int], list[Any]] = {}
    for event in batch:
        timer_id = event.timer_id
        if timer_id is not None and timer_id in unrecorded:
            events.append(_unlinked_row(event))
            continue
        kind, timer = event.kind, event.timer
        if isinstance(timer, TimerSnapshot):
            labels = timer.labels
            if labels.job_id is not None:
                key = (labels.job_id, job_owner(timer.uid))
                seen = jobs.setdefault(key, [labels.world_size, event.at, event.at])
                seen[0] = labels.world_size if labels.world_size is not None else seen[0]
                seen[2] = event.at
            if kind == EventKind.ACQUIRED:
                values = timer_values(timer)
                new_timers.append(tuple(values[column] for column in _TIMER_COLUMNS))
            elif kind == EventKind.EXTENDED:
                changes.setdefault(timer.id, {}).update(
                    expiration_time=timer.expiration_time, signal=timer.signal
                )
            elif kind in END_KINDS:
                changes.setdefault(timer.id, {}).update(
                    state=timer.state, ended_at=event.at, end_reason=event.reason()
                )
        if event.stack is not None and timer_id is not None:
            stack = event.stack
            stacks.append(
                (
                    timer_id,
                    stack.method,
                    event.at,
                    stack.seconds,
                    stack.truncated,
                    json.dumps(list(stack.notes)),
                    stack.text,
                )
            )
        events.append(_event_row(event, timer_id, event.detail.as_json()))
    # In this order: an update may concern a timer inserted by the same batch, and the
    # event log and stacks point at timers by foreign key.
    dialect = _SQLITE if connection.dialect.name == "sqlite" else _POSTGRES
    _insert(connection, dialect, "timers", _TIMER_COLUMNS, new_timers)
    _update_timers(connection, dialect, changes)
    _insert(connection, dialect, "events", _EVENT_COLUMNS, events)
    _insert(connection, dialect, "stacks", _STACK_COLUMNS, stacks)
    # Sorted: nodes sharing a PostgreSQL database then lock the rows of the jobs they
    # share in one order, and cannot deadlock each other.
    _upsert_jobs(connection, dialect, [(*key, *jobs[key]) for key in sorted(jobs)])


def _upsert_jobs(connection: Connection, dialect: _Dialect, rows: list[Row]) -> None:
    """Each job seen in the batch: created, or its last activity and size brought up to
    date (one statement for all of them)."""
    for placeholders, params in _chunks(dialect, rows, 5):
        connection.exec_driver_sql(
            "INSERT INTO jobs (job_id, uid, world_size, first_seen, last_seen) VALUES "
            + placeholders
            + " ON CONFLICT (job_id, uid) DO UPDATE SET"
            " world_size = coalesce(excluded.world_size, jobs.world_size),"
            f" last_seen = {dialect.greatest}(jobs.last_seen, excluded.last_seen)",
            params,
        )


def _insert(
    connection: Connection, dialect: _Dialect, table: str, columns: Sequence[str], rows: list[Row]
) -> None:
    """``INSERT INTO table (columns) VALUES (...), (...), ...``, in order."""
    if not rows:
        return
    if dialect.arrays:
        _copy(connection, table, columns, rows)
        return
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    for placeholders, params in _chunks(dialect, rows, len(columns)):
        connection.exec_driver_sql(head + placeholders, params)


def _copy(connection: Connection, table: str, columns: Sequence[str], rows: list[Row]) -> None:
    """PostgreSQL's bulk load, ``COPY ... FROM STDIN``, in the batch's transaction: rows
    stream to the server with no statement to parse or plan per row. Measured on 5,000
    events: a multi-row ``INSERT ... VALUES`` with 40,000 placeholders took ~45 us an
    event, an ``INSERT ... SELECT FROM unnest(arrays)`` ~15, COPY ~9. Rows go in their
    order, so the event log's ids follow the batch."""
    import psycopg

    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    # PostgreSQL's text cannot hold NUL, which SQLite's can, and a request may send one
    # in its scope id, a worker in its stack (a faulthandler dump it writes, a function
    # name py-spy prints): stored with U+FFFD in its place, rather than the row lost.
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                if any(isinstance(value, str) and "\x00" in value for value in row):
                    row = tuple(_without_nul(value) for value in row)
                copy.write_row(row)
    except psycopg.Error as error:
        # As SQLAlchemy would have raised it (IntegrityError, DataError, ...): the
        # recorder sets bad events aside by these, and retries the others.
        raise DBAPIError.instance(statement, None, error, psycopg.Error) from error
    finally:
        cursor.close()


def _update_timers(
    connection: Connection, dialect: _Dialect, changes: dict[int, dict[str, Any]]
) -> None:
    """One UPDATE per set of changed columns (a heartbeat moves the deadline, an end
    sets the state; both, when a batch holds both), each for all its timers at once."""
    by_columns: dict[tuple[str, ...], list[Row]] = {}
    for timer_id, values in changes.items():
        columns = tuple(sorted(values))
        by_columns.setdefault(columns, []).append((timer_id, *(values[c] for c in columns)))
    mark = dialect.placeholder
    for columns, rows in by_columns.items():
        if not dialect.update_from:
            assignments = ", ".join(f"{column} = {mark}" for column in columns)
            connection.exec_driver_sql(
                f"UPDATE timers SET {assignments} WHERE id = {mark}",
                [(*row[1:], row[0]) for row in rows],
            )
            continue
        if dialect.arrays:
            # As for inserts: one array per column; typed, so a column of nulls is too.
            types = dialect.arrays["timers"]
            arrays = ", ".join(f"%s::{types[column]}[]" for column in ("id", *columns))
            connection.exec_driver_sql(
                f"UPDATE timers SET {', '.join(f'{c} = v.{c}' for c in columns)}"
                f" FROM unnest({arrays}) AS v (id, {', '.join(columns)})"
                " WHERE timers.id = v.id",
                tuple(list(values) for values in zip(*rows, strict=True)),
            )
            continue
        # VALUES names its columns column1, column2, ...: column1 is the timer's id.
        assignments = ", ".join(
            f"{column} = v.column{number}" for number, column in enumerate(columns, start=2)
        )
        for placeholders, params in _chunks(dialect, rows, len(columns) + 1):
            connection.exec_driver_sql(
                f"UPDATE timers SET {assignments} FROM (VALUES {placeholders}) AS v"
                " WHERE timers.id = v.column1",
                params,
            )


def _chunks(dialect: _Dialect, rows: list[Row], width: int) -> Iterator[tuple[str, Row]]:
    """``rows`` as few multi-row statements allow: the placeholders ``(?, ?), (?, ?)``
    and the flat parameters of each chunk."""
    one = f"({', '.join([dialect.placeholder] * width)})"
    per_statement = dialect.max_variables // width
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        yield ", ".join([one] * len(chunk)), tuple(value for row in chunk for value in row)


def _unlinked_row(event: TimerEvent) -> Row:
    """The event of a timer missing from the database, kept with no link to it (the
    link would fail the foreign key): what happened is still on record."""
    detail = event.detail.as_json() | {
        "timer_id": event.timer_id,
        "unrecorded": "the timer's acquisition could not be recorded",
    }
    return _event_row(event, None, detail)


def _event_row(event: TimerEvent, timer_id: int | None, detail: JsonObject) -> Row:
    """The event log's row (``_EVENT_COLUMNS``) for ``event``."""
    timer = event.timer
    return (
        timer_id,
        event.kind,
        event.at,
        timer.pid,
        timer.scope_id,
        timer.source,
        json.dumps(detail),
        timer.node,
    )


def _without_nul(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value
