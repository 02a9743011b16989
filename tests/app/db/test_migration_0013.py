"""Migration 0013 (contract 10) on SQLite and PostgreSQL: incidents recorded before it
keep their rows, with no collective findings ([]), no suspect rules ({}) and no flight
recorder on their ranks (null); and it goes down again without losing them."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect

from app.db.database import MIGRATIONS_DIR
from tests.app.db.test_migrations import migrated_from

BEFORE_0013 = [
    "INSERT INTO incidents (id, job_id, opened_at, node, uid, suspects, summary, groups,"
    " nodes) VALUES (1, 'run', 31.0, 'n', 1000, '[2]', 'rank 2 stuck', '[]', '[\"n\"]')",
    "INSERT INTO incident_captures (id, incident_id, node, pid, rank, outcome, captured_at,"
    " stack_method) VALUES (1, 1, 'n', 500, 2, 'killed', 31.0, 'py-spy')",
]


def down_to(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def columns(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def test_incidents_recorded_before_0013_have_no_collectives_and_it_goes_down_again(
    backend_url: str,
) -> None:
    engine = migrated_from("0012", BEFORE_0013, backend_url)
    try:
        with engine.connect() as connection:
            incident = connection.exec_driver_sql(
                "SELECT suspects, collective_findings, suspect_rules FROM incidents"
            ).one()
            capture = connection.exec_driver_sql(
                "SELECT stack_method, collectives FROM incident_captures"
            ).one()
        down_to(engine, "0012")
        kept = {
            table: columns(engine, table) & {"collectives", "collective_findings", "suspect_rules"}
            for table in ("incidents", "incident_captures")
        }
        with engine.connect() as connection:
            after = connection.exec_driver_sql("SELECT id, summary FROM incidents").all()
            ranks = connection.exec_driver_sql("SELECT rank FROM incident_captures").all()
    finally:
        engine.dispose()
    # Read as JSON by the driver on PostgreSQL, as text on SQLite.
    assert [str(value).replace(" ", "") for value in incident] == ["[2]", "[]", "{}"]
    assert tuple(capture) == ("py-spy", None)
    assert kept == {"incidents": set(), "incident_captures": set()}
    assert [tuple(row) for row in after] == [(1, "rank 2 stuck")]
    assert [tuple(row) for row in ranks] == [(2,)]
