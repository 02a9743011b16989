"""How a batch of timer events becomes rows, written in one transaction: each
acquisition inserts its timer, later events update it, every event is a row of the
event log, and captured stacks get rows of their own.

The SQL is SQLite's, multi-row, and goes straight to the driver
(``exec_driver_sql``, so errors still arrive as SQLAlchemy's). Two reasons, both
measured under load (docs/benchmarks.md): the Core layers' per-row work cost more
than the write itself, and the driver releases the GIL for every statement it steps
(every row, with ``executemany``), then has to win it back from the busy event loop.
So a batch is a handful of statements, one per table and change, not one per row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Container, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection

from timer_core import TimerEvent
from timer_core.engine import END_KINDS, EventKind

from .timer_state import TimerState

__all__ = ["write_events"]

# Bound parameters per statement: SQLite's limit before 3.32, so any SQLite takes it.
_MAX_VARIABLES = 999
# UPDATE ... FROM came with SQLite 3.33; before it, one UPDATE per row.
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)

_TIMER_COLUMNS = (
    "id",
    "pid",
    "scope_id",
    "signal",
    "source",
    "state",
    "acquired_at",
    "expiration_time",
    "process_create_time",
    "uid",
    "dump_signal",
    "node",
    "job_id",
    "rank",
    "local_rank",
    "world_size",
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
    jobs: dict[str, list[Any]] = {}  # job → [world_size, first_seen, last_seen]
    for event in batch:
        timer_id = event.timer_id
        if timer_id is not None and timer_id in unrecorded:
            events.append(_unlinked_row(event))
            continue
        kind = event.kind
        if event.job_id is not None and kind != EventKind.REFUSED:
            seen = jobs.setdefault(event.job_id, [event.world_size, event.at, event.at])
            seen[0] = event.world_size if event.world_size is not None else seen[0]
            seen[2] = event.at
        if kind == EventKind.ACQUIRED:
            new_timers.append(
                (
                    timer_id,
                    event.pid,
                    event.scope_id,
                    event.signal,
                    event.source,
                    TimerState.ACTIVE,
                    event.acquired_at,
                    event.expiration_time,
                    event.process_create_time,
                    event.process_uid,
                    event.dump_signal,
                    event.node,
                    event.job_id,
                    event.rank,
                    event.local_rank,
                    event.world_size,
                )
            )
        elif kind == EventKind.EXTENDED and timer_id is not None:
            changes.setdefault(timer_id, {}).update(
                expiration_time=event.expiration_time, signal=event.signal
            )
        elif kind in END_KINDS and timer_id is not None:
            changes.setdefault(timer_id, {}).update(
                state=event.state, ended_at=event.at, end_reason=event.reason()
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
        events.append(
            (
                timer_id,
                kind,
                event.at,
                event.pid,
                event.scope_id,
                event.source,
                json.dumps(event.detail),
                event.node,
            )
        )
    # In this order: an update may concern a timer inserted by the same batch, and the
    # event log and stacks point at timers by foreign key.
    _insert(connection, "timers", _TIMER_COLUMNS, new_timers)
    _update_timers(connection, changes)
    _insert(connection, "events", _EVENT_COLUMNS, events)
    _insert(connection, "stacks", _STACK_COLUMNS, stacks)
    _upsert_jobs(connection, [(job_id, *seen) for job_id, seen in jobs.items()])


def _upsert_jobs(connection: Connection, rows: list[Row]) -> None:
    """Each job seen in the batch: created, or its last activity and size brought up to
    date (one statement for all of them)."""
    for placeholders, params in _chunks(rows, 4):
        connection.exec_driver_sql(
            "INSERT INTO jobs (job_id, world_size, first_seen, last_seen) VALUES "
            + placeholders
            + " ON CONFLICT (job_id) DO UPDATE SET"
            " world_size = coalesce(excluded.world_size, jobs.world_size),"
            " last_seen = max(jobs.last_seen, excluded.last_seen)",
            params,
        )


def _insert(connection: Connection, table: str, columns: Sequence[str], rows: list[Row]) -> None:
    """``INSERT INTO table (columns) VALUES (...), (...), ...``, in order."""
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    for placeholders, params in _chunks(rows, len(columns)):
        connection.exec_driver_sql(head + placeholders, params)


def _update_timers(connection: Connection, changes: dict[int, dict[str, Any]]) -> None:
    """One UPDATE per set of changed columns (a heartbeat moves the deadline, an end
    sets the state; both, when a batch holds both), each for all its timers at once."""
    by_columns: dict[tuple[str, ...], list[Row]] = {}
    for timer_id, values in changes.items():
        columns = tuple(sorted(values))
        by_columns.setdefault(columns, []).append((timer_id, *(values[c] for c in columns)))
    for columns, rows in by_columns.items():
        if not _UPDATE_FROM:
            assignments = ", ".join(f"{column} = ?" for column in columns)
            connection.exec_driver_sql(
                f"UPDATE timers SET {assignments} WHERE id = ?",
                [(*row[1:], row[0]) for row in rows],
            )
            continue
        # VALUES names its columns column1, column2, ...: column1 is the timer's id.
        assignments = ", ".join(
            f"{column} = v.column{number}" for number, column in enumerate(columns, start=2)
        )
        for placeholders, params in _chunks(rows, len(columns) + 1):
            connection.exec_driver_sql(
                f"UPDATE timers SET {assignments} FROM (VALUES {placeholders}) AS v"
                " WHERE timers.id = v.column1",
                params,
            )


def _chunks(rows: list[Row], width: int) -> Iterator[tuple[str, Row]]:
    """``rows`` as few multi-row statements allow: the placeholders ``(?, ?), (?, ?)``
    and the flat parameters of each chunk."""
    one = f"({', '.join('?' * width)})"
    per_statement = _MAX_VARIABLES // width
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        yield ", ".join([one] * len(chunk)), tuple(value for row in chunk for value in row)


def _unlinked_row(event: TimerEvent) -> Row:
    """The event of a timer missing from the database, kept with no link to it (the
    link would fail the foreign key): what happened is still on record."""
    detail = {
        **event.detail,
        "timer_id": event.timer_id,
        "unrecorded": "the timer's acquisition could not be recorded",
    }
    return (
        None,
        event.kind,
        event.at,
        event.pid,
        event.scope_id,
        event.source,
        json.dumps(detail),
        event.node,
    )
