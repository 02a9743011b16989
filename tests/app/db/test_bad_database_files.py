"""Bad database files, through the real ``timer-service`` command: a file that is not a
database is one clear message and a non-zero exit, not a traceback; an empty one starts
a new database with a warning."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.db.db_file_check import SQLITE_HEADER, DatabaseFileError, check_database_file
from tests.app.service_process import ServiceProcess


def serve(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0", "--db-url", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "content",
    [os.urandom(5000), b"not a database\n", b"SQLite format 2\x00" + bytes(100)],
    ids=["random-bytes", "text", "wrong-header"],
)
def test_a_file_that_is_not_a_database_is_one_clear_message_and_an_exit(
    tmp_path: Path, content: bytes
) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(content)
    result = serve(db)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if str(db) in line]
    assert len(message) == 1, result.stderr
    assert "is not a SQLite database" in message[0]
    assert "move it away or point --db-url elsewhere" in message[0]
    assert db.read_bytes() == content  # left as it was, for whoever looks into it


def test_an_empty_file_starts_a_new_database_with_one_warning(tmp_path: Path) -> None:
    db = tmp_path / "service.db"  # the file ServiceProcess points --db-url at
    db.touch()
    service = ServiceProcess(tmp_path).start()
    try:
        assert httpx.get(service.url + "/timers").json()["items"] == []
    finally:
        service.stop()
    warnings = [line for line in service.log().splitlines() if "is empty" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0] and str(db) in warnings[0]
    assert db.read_bytes().startswith(SQLITE_HEADER)  # now a database


def test_a_real_database_and_a_missing_file_pass_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "new.db"
    check_database_file(f"sqlite:///{missing}")
    db = tmp_path / "real.db"
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("CREATE TABLE t (x)")
    check_database_file(f"sqlite:///{db}")
    check_database_file("postgresql+psycopg://host/db")  # not a file: not ours to look at
    assert caplog.records == []
    (tmp_path / "short.db").write_bytes(b"x")  # too short to be one
    with pytest.raises(DatabaseFileError, match=r"short\.db is not a SQLite database"):
        check_database_file(f"sqlite:///{tmp_path / 'short.db'}")
