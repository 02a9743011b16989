"""The steps that only mean something for an SQLite file (WAL checkpoints, the file's
permissions, the look at its first bytes) are skipped for a PostgreSQL URL, and still
taken for SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.db.database import make_engine
from app.db.db_file_check import check_database_file
from app.db.private_files import secure_sqlite_files, sqlite_path
from app.db.wal_checkpoints import WalCheckpoints


def test_postgresql_urls_skip_them(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sqlite_path(postgres_url) is None
    monkeypatch.chdir(tmp_path)  # a path-like URL part must not become a file here
    secure_sqlite_files(postgres_url)
    check_database_file(postgres_url)
    assert list(tmp_path.iterdir()) == []
    engine = make_engine(postgres_url)
    checkpoints = WalCheckpoints(engine)
    try:
        checkpoints.start()
        assert not checkpoints.running
    finally:
        checkpoints.stop()
        engine.dispose()


def test_sqlite_urls_take_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'timers.db'}"
    assert sqlite_path(url) == tmp_path / "db" / "timers.db"
    secure_sqlite_files(url)
    assert (tmp_path / "db" / "timers.db").stat().st_mode & 0o777 == 0o600
    engine = make_engine(url)
    checkpoints = WalCheckpoints(engine, interval=60)
    try:
        checkpoints.start()
        assert checkpoints.running
    finally:
        checkpoints.stop()
        engine.dispose()
