"""How a batch of timer events becomes rows, written in one transaction: each
acquisition inserts its timer, later events update it (one UPDATE per set of changed
columns, not per timer), every event is a row of the event log, and captured stacks
get rows of their own."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from sqlalchemy import Connection, bindparam, insert, update

from timer_core import TimerEvent
from timer_core.engine import END_KINDS, EventKind

from .models import Event, Stack, Timer
from .timer_state import TimerState

__all__ = ["write_events"]

_timers = Timer.__table__  # type: ignore[attr-defined]
_events = Event.__table__  # type: ignore[attr-defined]
_stacks = Stack.__table__  # type: ignore[attr-defined]


def write_events(
    connection: Connection, batch: list[TimerEvent], unrecorded: Container[int]
) -> None:
    """Write ``batch`` in order. Events of a timer in ``unrecorded`` (its acquisition
    could not be written) go to the event log unlinked: linked, they would fail the
    foreign key, and take their whole batch with them."""
    new_timers: list[dict[str, Any]] = []
    changes: dict[int, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    stacks: list[dict[str, Any]] = []
    for event in batch:
        if event.timer_id is not None and event.timer_id in unrecorded:
            rows.append(_unlinked_row(event))
            continue
        if event.kind == EventKind.ACQUIRED:
            new_timers.append(
                {
                    "id": event.timer_id,
                    "pid": event.pid,
                    "scope_id": event.scope_id,
                    "signal": event.signal,
                    "source": event.source,
                    "state": TimerState.ACTIVE,
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
    if new_timers:
        connection.execute(insert(_timers), new_timers)
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for timer_id, values in changes.items():
        by_columns.setdefault(tuple(sorted(values)), []).append({"timer_id": timer_id, **values})
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


def _unlinked_row(event: TimerEvent) -> dict[str, Any]:
    """The event of a timer missing from the database, kept with no link to it (the
    link would fail the foreign key): what happened is still on record."""
    detail = {
        **event.detail,
        "timer_id": event.timer_id,
        "unrecorded": "the timer's acquisition could not be recorded",
    }
    return {
        "timer_id": None,
        "kind": event.kind,
        "at": event.at,
        "pid": event.pid,
        "scope_id": event.scope_id,
        "source": event.source,
        "detail": detail,
    }
