"""A real PostgreSQL server for the tests: one database of this test session's own,
``timer_test_<random>``, created at the first test that asks and dropped at the end,
and a fresh schema in it for every test (``postgres_url``), so that each test migrates
from nothing, as the service does on a new database.

Where the server is:

- ``TIMER_SERVICE_TEST_POSTGRES``, a libpq connection string of a role that may create
  databases (e.g. ``host=db.example user=ci password=...``), if set;
- otherwise this machine's: the Unix socket in /var/run/postgresql, then
  127.0.0.1:5432, as the role ``postgres``, then ``root``, then the current user.

With no server reachable, the tests that need one skip, and say why; unless
``TIMER_SERVICE_REQUIRE_POSTGRES=1`` (set by scripts/test once it has made sure a
server runs), where they fail instead: CI must not pass by skipping them.

Both fixtures are registered for every test (tests/conftest.py imports them).
"""

from __future__ import annotations

import getpass
import itertools
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest
from sqlalchemy import URL

__all__ = ["PostgresDatabase", "postgres_database", "postgres_url"]

SERVER_ENV = "TIMER_SERVICE_TEST_POSTGRES"
REQUIRE_ENV = "TIMER_SERVICE_REQUIRE_POSTGRES"
_SOCKET_DIR = "/var/run/postgresql"
_schemas = itertools.count(1)


@dataclass(frozen=True)
class PostgresDatabase:
    """The session's database: how to reach it, and SQLAlchemy URLs into it."""

    params: dict[str, Any]  # libpq keywords of the server and role (no dbname)
    name: str

    def url(self, schema: str | None = None) -> str:
        """A ``postgresql+psycopg://`` URL of this database (with ``schema`` first on the
        search path, if given), as ``--db-url`` takes it."""
        query: dict[str, str] = {}
        if str(self.params.get("host", "")).startswith("/"):
            query["host"] = str(self.params["host"])  # a socket directory
        if schema is not None:
            query["options"] = f"-csearch_path={schema}"
        host = self.params.get("host")
        url = URL.create(
            "postgresql+psycopg",
            username=self.params.get("user"),
            password=self.params.get("password"),
            host=None if "host" in query or host is None else str(host),
            port=self.params.get("port"),
            database=self.name,
            query=query,
        )
        return url.render_as_string(hide_password=False)

    def connect(self) -> Any:
        """An autocommit psycopg connection to the database itself."""
        import psycopg

        return psycopg.connect(**self.params, dbname=self.name, autocommit=True)


def _candidates() -> list[dict[str, Any]]:
    given = os.environ.get(SERVER_ENV)
    if given:
        from psycopg.conninfo import conninfo_to_dict

        return [conninfo_to_dict(given)]
    users = dict.fromkeys(["postgres", "root", getpass.getuser()])
    return [
        {"host": host, "port": 5432, "user": user}
        for host in (_SOCKET_DIR, "127.0.0.1")
        for user in users
    ]


def _no_server(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but no PostgreSQL for the tests: {reason}")
    pytest.skip(f"needs a PostgreSQL server (scripts/test starts one): {reason}")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        _no_server("psycopg is not installed (pip install 'timer-service[postgres]')")
    errors: list[str] = []
    for candidate in _candidates():
        params = {key: value for key, value in candidate.items() if key != "dbname"}
        try:
            admin = psycopg.connect(**params, dbname="postgres", autocommit=True, connect_timeout=3)
        except psycopg.Error as error:
            errors.append(f"{params.get('user')}@{params.get('host')}: {error}".strip())
            continue
        break
    else:
        _no_server("; ".join(errors))
    name = f"timer_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield PostgresDatabase(params, name)
        finally:
            # FORCE: a service process a failed test left behind may still be connected.
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url(postgres_database: PostgresDatabase) -> str:
    """A URL of an empty schema of this test's own in the session's database."""
    schema = f"test_{next(_schemas)}"
    with postgres_database.connect() as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    return postgres_database.url(schema)
