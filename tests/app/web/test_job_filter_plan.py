"""The dashboard's job filter reads a job's active timers by the state index, not by
the job's: a job's timers are every one it ever armed (its ranks release several a
second), and the page polls twice a second. By the job's index SQLite read all of
them on each poll (300,000 timers: 60 ms a poll; by the state index, 1 ms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from app.web.fleet_view import Fleet
from tests.conftest import migrated_engine


def test_the_job_filter_reads_the_active_timers_not_every_timer_of_the_job(
    tmp_path: Path,
) -> None:
    engine = migrated_engine(tmp_path / "timers.db")
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    fleet = object.__new__(Fleet)  # only its engine is read by job_active
    fleet._engine = engine
    assert fleet.job_active("train", None, None, None, 500) == ([], 0)
    event.remove(engine, "before_cursor_execute", record)
    (statement, parameters), *_ = [found for found in statements if "FROM timers" in found[0]]
    with engine.connect() as connection:
        explained = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        plan = [str(row[-1]) for row in explained]
    assert any("ix_timers_state_id" in step for step in plan), plan
    assert not any("ix_timers_job_id" in step or "scope_holds" in step for step in plan), plan
