"""``timer-service doctor`` beside a hostile local user: doctor runs as root on a
shared host, and must only read, and run only its own test workers.

- a database path that leads, through a link in a directory others can write, to a
  file of root's is not opened (it was: ``journal_mode=WAL`` rewrote it);
- a real database, and the place of a missing one, are left exactly as they were (no
  file made and removed, no ``-wal``/``-shm``, no conversion);
- a test worker does not import from doctor's working directory (``python -c`` puts it
  first on ``sys.path``: a ``timer_core/`` left in /tmp ran as root).

A py-spy another user could replace is in test_doctor.py (it needs its venv of links).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.db.database import make_engine, migrate
from tests.app.cli.doctor_command import ROOT, DoctorRun


def _plain_database(path: Path) -> None:
    """Another program's database, in rollback-journal mode (as SQLite makes them)."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE secrets (value TEXT)")
        connection.execute("INSERT INTO secrets VALUES ('root only')")
    connection.close()


def _service_database(path: Path) -> None:
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate(engine)
    finally:
        engine.dispose()


def _snapshot(directory: Path) -> dict[str, object]:
    """Every file's bytes, and the directory's own mtime (a file made and removed
    there changes it)."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}
    return {"files": files, "mtime": directory.stat().st_mtime_ns}


@dataclass(frozen=True, slots=True)
class Places:
    private: Path  # root's own, 0700: another program's database, an empty file
    service: Path  # a real timer-service database, closed
    shared: Path  # 0777: links planted to the private files
    before: dict[str, dict[str, object]]  # their snapshots, before any doctor ran


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Places:
    base = tmp_path_factory.mktemp("doctor-hostile")
    base.chmod(0o700)
    private = base / "private"  # root's: nobody else may read it
    private.mkdir(mode=0o700)
    _plain_database(private / "other.db")
    (private / "empty").write_bytes(b"")
    service = base / "service"
    service.mkdir(mode=0o700)
    _service_database(service / "timer-service.db")
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may plant links here
    (shared / "linked.db").symlink_to(private / "other.db")
    (shared / "linked-empty.db").symlink_to(private / "empty")
    before = {"private": _snapshot(private), "service": _snapshot(service)}
    return Places(private, service, shared, before)


@pytest.fixture(scope="module")
def runs(places: Places) -> Iterator[dict[str, DoctorRun]]:
    flags = ("--no-capture-stacks", "--db-url")
    shared, service = places.shared, places.service
    started: dict[str, DoctorRun] = {}
    try:
        for name in ("linked.db", "linked-empty.db"):
            started[name] = DoctorRun(*flags, f"sqlite:///{shared / name}")
        started["service"] = DoctorRun(*flags, f"sqlite:///{service / 'timer-service.db'}")
        started["missing"] = DoctorRun(*flags, f"sqlite:///{service / 'new' / 'x.db'}")
        yield started
    finally:
        for run in started.values():
            run.kill()


@pytest.mark.parametrize("name", ["linked.db", "linked-empty.db"])
def test_a_database_linked_from_a_shared_directory_is_not_opened(
    places: Places, runs: dict[str, DoctorRun], name: str
) -> None:
    doctored = runs[name].finish()
    assert doctored.returncode == 1, doctored.stdout + doctored.stderr
    result = doctored.result("database")
    assert result["status"] == "fail"
    assert result["found"].startswith("not opened: ") and "symbolic link" in result["found"]
    assert "real path" in result["fix"]
    # Neither converted to WAL nor given a header, and no -wal or -shm made beside them.
    assert _snapshot(places.private) == places.before["private"]
    assert sorted(os.listdir(places.private)) == ["empty", "other.db"]


def test_a_database_in_a_shared_directory_is_not_opened(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    _plain_database(shared / "x.db")
    before = _snapshot(shared)
    doctored = DoctorRun("--no-capture-stacks", "--db-url", f"sqlite:///{shared / 'x.db'}")
    result = doctored.finish().result("database")
    assert result["status"] == "fail", result
    assert result["found"].startswith("not opened: the database's directory ")
    assert "writable by group or others (mode 0777)" in result["found"]
    assert result["fix"].startswith("use a directory that only root or uid ")
    assert _snapshot(shared) == before


def test_a_real_database_is_only_read_and_a_missing_one_stays_missing(
    places: Places, runs: dict[str, DoctorRun]
) -> None:
    doctored = runs["service"].finish()
    assert doctored.returncode == 0, doctored.stdout + doctored.stderr
    assert doctored.result("database")["status"] == "ok"
    assert doctored.result("migrations")["found"].endswith("this version's newest")
    missing = runs["missing"].finish()
    assert missing.returncode == 0, missing.stdout + missing.stderr
    assert "does not exist yet" in missing.result("database")["found"]
    # The same bytes; no -wal, -shm or new/ left; and no file made and removed there
    # (to try whether the directory is writable): its mtime would have moved.
    assert _snapshot(places.service) == places.before["service"]
    assert os.listdir(places.service) == ["timer-service.db"]


def test_a_test_worker_does_not_import_from_doctors_directory(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    (planted / "doctor_planted").mkdir(parents=True)
    marker = tmp_path / "ran"
    (planted / "doctor_planted" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    # doctor's own code, in a process whose working directory is the planted one.
    code = (
        "from app.cli.doctor.probe_process import ProbeStartError, probe_process, "
        "sleeping_python\n"
        "import sys\n"
        "argv = sleeping_python(sys.executable, 'import doctor_planted')\n"
        "try:\n"
        "    with probe_process(argv, start_within=30) as pid:\n"
        "        print('started')\n"
        "except ProbeStartError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    said = subprocess.run(
        [sys.executable, "-c", code],
        cwd=planted,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "No module named 'doctor_planted'" in said.stdout, said.stdout + said.stderr
    assert not marker.exists()
