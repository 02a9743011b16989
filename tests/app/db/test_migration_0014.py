"""Migration 0014 (contract 12) on SQLite and PostgreSQL: timers recorded before it
chose their own timeout ("explicit"); and it goes down again, in place, with the
timers' events and stacks kept (a SQLite batch rebuild of ``timers`` failed on the
events' foreign key, and without events deleted every stack by ON DELETE CASCADE)."""

from __future__ import annotations

import pytest

from tests.app.db.test_migration_0013 import columns, down_to
from tests.app.db.test_migrations import migrated_from

_TIMER = (
    "INSERT INTO timers (id, pid, scope_id, signal, source, state, acquired_at,"
    " expiration_time, node, job_id, uid, ended_at) VALUES"
)
_TIMERS = [
    f"{_TIMER} (1, 100, 's', 9, 'http', 'killed', 10.0, 70.0, 'n', 'run', 1000, 70.0)",
    f"{_TIMER} (2, 101, 's', 9, 'http', 'released', 11.0, 71.0, 'n', 'run', 1000, 12.0)",
]
_STACK = (
    "INSERT INTO stacks (timer_id, method, captured_at, seconds, truncated, notes, text)"
    " VALUES (1, 'py-spy', 70.0, 0.1, FALSE, '[]', 'frame')"
)
_EVENT = (
    "INSERT INTO events (id, timer_id, kind, at, pid, scope_id, source, detail, node)"
    " VALUES (1, 1, 'killed', 70.0, 100, 's', 'http', '{}', 'n')"
)


@pytest.mark.parametrize("with_events", [True, False], ids=["events", "no-events"])
def test_timers_before_0014_are_explicit_and_it_goes_down_keeping_events_and_stacks(
    backend_url: str, with_events: bool
) -> None:
    rows = [*_TIMERS, _STACK, *([_EVENT] if with_events else [])]
    engine = migrated_from("0013", rows, backend_url)
    try:
        with engine.connect() as connection:
            sources = connection.exec_driver_sql(
                "SELECT id, timeout_source FROM timers ORDER BY id"
            ).all()
        down_to(engine, "0013")
        kept = columns(engine, "timers") & {"timeout_source"}
        with engine.connect() as connection:
            timers = connection.exec_driver_sql("SELECT id FROM timers ORDER BY id").all()
            stacks = connection.exec_driver_sql("SELECT timer_id, text FROM stacks").all()
            events = connection.exec_driver_sql("SELECT id, timer_id FROM events").all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in sources] == [(1, "explicit"), (2, "explicit")]
    assert kept == set()
    assert [tuple(row) for row in timers] == [(1,), (2,)]
    assert [tuple(row) for row in stacks] == [(1, "frame")]
    assert [tuple(row) for row in events] == ([(1, 1)] if with_events else [])
