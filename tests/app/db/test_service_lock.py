"""The lock of one live service per database and node, on its own (the real processes
are in test_one_service_per_database.py): a PostgreSQL session lost (the connection
killed on the server) is opened again and the lock taken again, or, if another service
took the node meanwhile, the loss is reported. (A link planted as the SQLite lock file:
test_private_files.py.)"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from app.db.database import make_engine
from app.db.service_lock import ServiceLock, ServiceLockError


def kill_lock_sessions(postgres_url: str) -> int:
    """Terminate this process's lock sessions on the server, as a failover or an
    operator's pg_terminate_backend would; how many."""
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name LIKE :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": f"timer-service pid {os.getpid()} %"},
                ).all()
            )
    finally:
        engine.dispose()


def test_a_lost_session_is_reported_while_another_holds_the_node_then_taken_again(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    first, second = (ServiceLock(engine, postgres_url, "node-a") for _ in range(2))
    try:
        first.acquire()
        with pytest.raises(ServiceLockError, match=f"pid {os.getpid()} on "):
            second.acquire()
        first.check()
        assert first.problem is None  # its session is alive: nothing to do

        assert kill_lock_sessions(postgres_url) == 1
        second.acquire()  # the node's lock is free once the first's session is gone
        first.check()
        assert first.problem is not None and "node name 'node-a' is in use" in first.problem

        second.release()
        first.check()
        assert first.problem is None
        with pytest.raises(ServiceLockError):
            second.acquire()  # the first holds it again
    finally:
        first.release()
        second.release()
        engine.dispose()
