"""The Alembic migrations build exactly the schema the models describe, on SQLite and
on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

import app.db.job_models
import app.db.models
import app.notify.tables  # noqa: F401
from app.db.database import MIGRATIONS_DIR, make_engine, migrate
from tests.conftest import migrated_engine


@pytest.fixture
def engine(backend_engine: Engine) -> Engine:
    return backend_engine


def test_migrations_match_the_models(engine: Engine) -> None:
    migrate(engine)  # applying again is a no-op
    with engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert drift == []


def test_timer_ids_are_64_bit_on_postgresql(postgres_url: str) -> None:
    """Fleet ids are far above 2**31: PostgreSQL's INTEGER would refuse them. (SQLite's
    INTEGER is 64-bit already.)"""
    engine = migrated_engine(postgres_url)
    try:
        check_bigint_ids(engine)
    finally:
        engine.dispose()


def check_bigint_ids(engine: Engine) -> None:
    columns = {
        (table, column["name"]): str(column["type"])
        for table in ("timers", "events", "stacks", "incidents", "incident_captures")
        for column in inspect(engine).get_columns(table)
    }
    for key in [
        ("timers", "id"),
        ("events", "id"),
        ("events", "timer_id"),
        ("stacks", "timer_id"),
        ("incidents", "trigger_timer_id"),
        ("incident_captures", "timer_id"),
        ("events", "pid"),
        ("timers", "uid"),
        ("incident_captures", "uid"),
    ]:
        assert columns[key] == "BIGINT", key
    with engine.connect() as connection:
        sequence = connection.exec_driver_sql(
            "SELECT data_type FROM information_schema.sequences"
            " WHERE sequence_name = 'events_id_seq' AND sequence_schema = current_schema()"
        ).scalar_one()
    assert sequence == "bigint"


def test_jobs_recorded_before_0009_get_their_owners_from_their_timers(backend_url: str) -> None:
    """A job id two users' timers carried was one row: it becomes one job per owner,
    each with its own activity and incidents; a job with no timer left keeps one row,
    owner unknown (-1)."""
    engine = migrated_from("0008", BEFORE_0009, backend_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT job_id, uid, world_size, first_seen, last_seen, incidents FROM jobs"
                " ORDER BY job_id, uid"
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("gone", -1, None, 5.0, 6.0, 0),
        ("shared", 0, 2, 10.0, 12.0, 0),
        ("shared", 1001, 2, 20.0, 31.0, 1),
    ]


def test_timers_recorded_before_0010_keep_their_rows_with_no_restart_count(
    backend_url: str,
) -> None:
    """0010 adds torchrun's TORCHELASTIC_RESTART_COUNT as a column: a timer recorded
    before keeps its row and its other labels, with no restart count (null)."""
    before = [f"{_TIMER} (1, 100, 's', 9, 'http', 'active', 10.0, 70.0, 'n', 'job', 0, NULL)"]
    engine = migrated_from("0009", before, backend_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT id, job_id, state, restart_count FROM timers"
            ).all()
            connection.exec_driver_sql("UPDATE timers SET restart_count = 3 WHERE id = 1")
            stored = connection.exec_driver_sql("SELECT restart_count FROM timers").scalar()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(1, "job", "active", None)]
    assert stored == 3


def migrated_from(revision: str, rows: list[str], url: str) -> Engine:
    """An engine on ``url`` migrated up to ``revision``, given ``rows`` (SQL statements)
    there, then migrated on to the latest revision as a service start does."""
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        for statement in rows:
            connection.exec_driver_sql(statement)
    migrate(engine)
    return engine


_TIMER = (
    "INSERT INTO timers (id, pid, scope_id, signal, source, state, acquired_at,"
    " expiration_time, node, job_id, uid, ended_at) VALUES"
)
BEFORE_0009 = [
    "INSERT INTO jobs (job_id, world_size, first_seen, last_seen, incidents) VALUES"
    " ('shared', 2, 10.0, 31.0, 1), ('gone', NULL, 5.0, 6.0, 0)",
    f"{_TIMER} (1, 100, 's', 9, 'http', 'released', 10.0, 70.0, 'n', 'shared', 0, 12.0)",
    f"{_TIMER} (2, 101, 's', 9, 'http', 'active', 11.0, 71.0, 'n', 'shared', 0, NULL)",
    f"{_TIMER} (3, 200, 's', 9, 'http', 'killed', 20.0, 21.0, 'n', 'shared', 1001, 21.0)",
    "INSERT INTO incidents (id, job_id, opened_at, node, uid, suspects, summary, groups,"
    " nodes) VALUES (1, 'shared', 31.0, 'n', 1001, '[]', '', '[]', '[]')",
]
