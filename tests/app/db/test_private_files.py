"""The SQLite database holds every captured stack: its file, -wal and -shm are 0600, a
directory the service makes is 0700, a readable database is tightened at start, and a
link or a FIFO at the database path is refused, not followed or waited on."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db.private_files import sqlite_path
from app.main import create_app
from app.settings import Settings
from tests.dump_paths import returns
from tests.second_user import SecondUser


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def started(db: Path) -> TestClient:
    """The app for a database at ``db``; entering it runs the start (and migrations)."""
    return TestClient(create_app(Settings(db_url=f"sqlite:///{db}")))


def test_a_fresh_database_and_the_directory_made_for_it_are_private(tmp_path: Path) -> None:
    db = tmp_path / "new" / "dir" / "timers.db"
    with started(db):
        # While the service runs, SQLite's WAL files are there too.
        files = {path: mode(path) for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))}
        assert files == dict.fromkeys(files, 0o600)
        assert mode(tmp_path / "new") == 0o700 and mode(tmp_path / "new" / "dir") == 0o700


def test_the_second_user_cannot_read_the_database(
    second_user: SecondUser, shared_tmp: Path
) -> None:
    db = shared_tmp / "timers.db"  # a directory that user can reach
    readable = shared_tmp / "public"
    readable.write_text("anyone may read this")
    readable.chmod(0o644)
    with started(db):
        assert second_user.can_read(readable)  # the check can see a readable file
        assert not second_user.can_read(db)
        assert not second_user.can_read(f"{db}-wal")


def test_a_database_others_can_read_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "timers.db"
    db.touch(mode=0o644)
    db.chmod(0o644)  # as an older version, or another tool, left it
    with caplog.at_level(logging.WARNING, logger="app.private_files"), started(db):
        assert mode(db) == 0o600
    assert any("tightened to 0600" in record.getMessage() for record in caplog.records)


# The database itself, and its lock file (app.db.service_lock: one live service per file).
@pytest.mark.parametrize("planted", ["timers.db", "timers.db.lock"])
def test_a_link_at_the_database_path_is_refused_and_its_target_untouched(
    tmp_path: Path, planted: str
) -> None:
    target = tmp_path / "shared.txt"
    target.write_text("not a database\n")
    target.chmod(0o644)
    (tmp_path / planted).symlink_to(target)
    with pytest.raises(RuntimeError, match="symbolic link"), started(tmp_path / "timers.db"):
        pass
    assert mode(target) == 0o644
    assert target.read_text() == "not a database\n"


def test_a_fifo_at_the_database_path_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "timers.db")

    def start() -> None:
        with started(tmp_path / "timers.db"):
            pass

    with pytest.raises(RuntimeError, match="not a regular file"):
        returns(start)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///./timer-service.db", Path("timer-service.db")),
        ("sqlite+pysqlite:////var/lib/t.db", Path("/var/lib/t.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql+psycopg://u@db/timers", None),
    ],
)
def test_only_sqlite_files_are_managed(url: str, path: Path | None) -> None:
    assert sqlite_path(url) == path
