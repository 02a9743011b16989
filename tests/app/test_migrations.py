"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import app.models  # noqa: F401  (registers the tables)
from app.db import migrate
from tests.conftest import migrated_engine


def test_migrations_match_the_models(tmp_path: Path) -> None:
    engine = migrated_engine(tmp_path / "schema.db")
    migrate(engine)  # applying again is a no-op
    with engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert drift == []
