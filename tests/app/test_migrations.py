"""The Alembic migrations build exactly the schema the models describe, on SQLite and
on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

import app.job_models
import app.models  # noqa: F401
from app.db import migrate
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
