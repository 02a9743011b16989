"""``timer-service doctor``, the real command: it passes a healthy host, and fails each
bad host built here for real (a world-writable FIFO directory, a low ``ulimit -n``, a
file that is not a database, a database migrated by a newer version, no py-spy),
naming the fix. The bad hosts that need root (a full disk, a read-only disk, ptrace
taken away) are in test_doctor_root.py.

Every host's doctor starts at once, in one fixture: separate processes, so the module
takes as long as the slowest run (torch's worker server check imports torch)."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli.doctor.results import Check, Result, Status, run_checks
from app.db.database import make_engine, migrate
from app.settings import Settings
from tests.app.cli.doctor_command import ROOT, DoctorRun, doctor_command

# Every family of checks says something on every host (others are added by the flags).
FAMILIES = {
    "ptrace scope",
    "capabilities",
    "py-spy",
    "py-spy, other users",
    "torch worker server",
    "file descriptors",
    "database",
    "disk space",
    "wall clock",
    "clock steps",
    "time sync",
}
IN_A_VENV = sys.prefix != sys.base_prefix
LINE = re.compile(r"(?P<status>ok  |warn|fail)  (?P<name>\S.*?\S) *  (?P<found>\S.*)$")


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def _python_without_py_spy(where: Path) -> Path:
    """This venv's interpreter seen from a directory with no py-spy beside it: a venv of
    links (``pyvenv.cfg``, ``lib``) to this one."""
    venv = Path(sys.prefix)
    (where / "bin").mkdir(parents=True)
    shutil.copy(venv / "pyvenv.cfg", where / "pyvenv.cfg")
    (where / "lib").symlink_to(venv / "lib")
    python = where / "bin" / "python"
    python.symlink_to(os.path.realpath(sys.executable))
    return python


def _newer_database(path: Path) -> str:
    """A real database whose migrations say a newer version wrote it."""
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    connection.close()
    return url


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DoctorRun]]:
    base = tmp_path_factory.mktemp("doctor")
    base.chmod(0o700)
    db = f"sqlite:///{base / 'x.db'}"
    runs: dict[str, DoctorRun] = {}
    try:
        healthy = ["--db-url", f"sqlite:///{base / 'db' / 'timer-service.db'}"]
        healthy += ["--stack-dir", str(base / "stacks"), "--fifo", str(base / "timer.fifo")]
        runs["healthy"] = DoctorRun(*healthy)
        # The table's shape only: the checks that start test workers are the JSON run's.
        runs["healthy table"] = DoctorRun(*healthy, "--no-capture-stacks", json_output=False)

        shared = base / "shared"
        shared.mkdir()
        shared.chmod(0o777)  # others can swap the FIFO for a link
        # Set in the environment, as serve reads it too.
        env = {"TIMER_SERVICE_FIFO": str(shared / "timer.fifo")}
        # And a socket in a directory nobody made: serve does not make it either.
        nowhere = ("--uds", str(base / "nowhere" / "timer.sock"))
        runs["bad places"] = DoctorRun("--no-capture-stacks", "--db-url", db, *nowhere, env=env)

        low = ("--no-capture-stacks", "--db-url", db)
        runs["low nofile"] = DoctorRun(*low, preexec_fn=_low_nofile)
        runs["low nofile, fewer connections"] = DoctorRun(
            *low, "--max-connections", "40", preexec_fn=_low_nofile
        )

        garbage = base / "garbage.db"
        garbage.write_bytes(b"not a database, only some text\n" * 10)
        garbage.chmod(0o600)
        runs["garbage"] = DoctorRun("--no-capture-stacks", "--db-url", f"sqlite:///{garbage}")

        newer = _newer_database(base / "newer.db")
        runs["newer"] = DoctorRun("--no-capture-stacks", "--db-url", newer)

        if IN_A_VENV:
            python = _python_without_py_spy(base / "venv")
            path = os.pathsep.join(
                d
                for d in ("/usr/local/bin", "/usr/bin", "/bin")
                if not os.path.exists(f"{d}/py-spy")
            )
            runs["no py-spy"] = DoctorRun("--db-url", db, python=str(python), env={"PATH": path})
            # A py-spy on PATH in a directory anyone can write: what it would do as root.
            planted = base / "planted"
            planted.mkdir()
            planted.chmod(0o777)
            marker = base / "planted py-spy ran"
            (planted / "py-spy").write_text(f"#!/bin/sh\ntouch '{marker}'\n")
            (planted / "py-spy").chmod(0o755)
            runs["planted py-spy"] = DoctorRun(
                "--db-url", db, python=str(python), env={"PATH": f"{planted}{os.pathsep}{path}"}
            )
        yield runs
    finally:
        for run in runs.values():
            run.kill()


def test_a_healthy_host_passes(hosts: dict[str, DoctorRun]) -> None:
    doctored = hosts["healthy"].finish()
    assert doctored.returncode == 0, doctored.stdout + doctored.stderr
    assert doctored.failed() == []
    names = {r["name"] for r in doctored.results}
    assert names >= FAMILIES
    assert {"path: --stack-dir", "path: --fifo's directory", "path: the database file"} <= names
    for result in doctored.results:
        assert result["status"] in ("ok", "warn")
        assert result["found"]
        # A warning always says what to do.
        assert result["fix"] or result["status"] == "ok", result
    assert "read a test worker" in doctored.result("py-spy")["found"]


def test_the_table_has_one_aligned_line_per_check_and_a_summary(
    hosts: dict[str, DoctorRun],
) -> None:
    table = hosts["healthy table"].finish()
    assert table.returncode == 0, table.stdout + table.stderr
    assert "\x1b[" not in table.stdout  # not a terminal: no colour
    *lines, summary = table.stdout.splitlines()
    rows = [LINE.match(line) for line in lines]
    assert all(rows), table.stdout
    names = {row.group("name") for row in rows if row}
    assert names >= FAMILIES
    # Each check's finding starts in the same column.
    assert len({row.start("found") for row in rows if row}) == 1, table.stdout
    statuses = [row.group("status").strip() for row in rows if row]
    ok, warned = statuses.count("ok"), statuses.count("warn")
    assert summary.startswith(f"{ok} ok, {warned} warn, 0 fail: "), summary
    for line in lines:
        assert line.startswith("ok") or "  fix: " in line, line  # a warning says what to do


def test_on_a_terminal_the_status_is_coloured(tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    # A terminal that has colours (TERM=dumb, or NO_COLOR, would rightly have none).
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    flags = ["--no-capture-stacks", "--db-url", f"sqlite:///{tmp_path / 'x.db'}"]
    with subprocess.Popen(
        doctor_command(*flags), cwd=ROOT, stdout=terminal, stderr=subprocess.DEVNULL, env=env
    ) as doctor:
        os.close(terminal)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once the command has exited
            while chunk := os.read(main, 65536):
                shown += chunk
        os.close(main)
        assert doctor.wait(120) == 0
    # rich's green for ok, and only around the status word.
    assert b"\x1b[32mok  \x1b[0m  ptrace scope" in shown, shown[:500]


def test_a_world_writable_fifo_directory_fails(hosts: dict[str, DoctorRun]) -> None:
    doctored = hosts["bad places"].finish()
    assert doctored.returncode == 1, doctored.stdout + doctored.stderr
    assert set(doctored.failed()) == {"path: --uds's directory", "path: --fifo's directory"}
    result = doctored.result("path: --fifo's directory")
    assert "writable by group or others (mode 0777)" in result["found"]
    assert result["fix"].startswith(f"use a directory that only root or uid {os.geteuid()} can")


def test_a_directory_the_service_does_not_make_fails(hosts: dict[str, DoctorRun]) -> None:
    result = hosts["bad places"].finish().result("path: --uds's directory")
    assert result["status"] == "fail"
    assert "nowhere does not exist, and the service does not make it" in result["found"]
    assert result["fix"].startswith("make it before the service starts: mkdir -m 0755 ")


def test_a_low_open_file_limit_fails(hosts: dict[str, DoctorRun]) -> None:
    result = hosts["low nofile"].finish().only_failure("file descriptors")
    assert result["found"].startswith("hard limit 256 (soft 256)")
    assert "ulimit -n" in result["fix"] and "LimitNOFILE=" in result["fix"]
    assert "lower --max-connections to 49" in result["fix"]


def test_the_same_limit_passes_with_fewer_connections(hosts: dict[str, DoctorRun]) -> None:
    # The fix's other way: 256 is too few for 1000 connections, enough for 40.
    doctored = hosts["low nofile, fewer connections"].finish()
    assert doctored.result("file descriptors")["status"] == "ok", doctored.stdout
    assert doctored.returncode == 0, doctored.stdout + doctored.stderr


def test_a_file_that_is_not_a_database_fails(hosts: dict[str, DoctorRun]) -> None:
    result = hosts["garbage"].finish().only_failure("database")
    assert "garbage.db is not a SQLite database" in result["found"]
    assert "point --db-url elsewhere" in result["fix"]


def test_a_database_migrated_by_a_newer_version_fails(hosts: dict[str, DoctorRun]) -> None:
    doctored = hosts["newer"].finish()
    result = doctored.only_failure("migrations")
    assert doctored.result("database")["status"] == "ok"
    assert "at 9999, which this timer-service" in result["found"]
    assert "restore the backup" in result["fix"]


@pytest.mark.skipif(not IN_A_VENV, reason="needs the tests to run in a venv")
def test_no_py_spy_fails(hosts: dict[str, DoctorRun]) -> None:
    doctored = hosts["no py-spy"].finish()
    assert doctored.returncode == 1, doctored.stdout + doctored.stderr
    assert "py-spy" in doctored.failed()
    result = doctored.result("py-spy")
    assert "venv/bin/python nor on PATH" in result["found"]
    assert "pip install py-spy" in result["fix"]


@pytest.mark.skipif(not IN_A_VENV, reason="needs the tests to run in a venv")
def test_a_py_spy_others_can_replace_fails_and_is_not_run(hosts: dict[str, DoctorRun]) -> None:
    doctored = hosts["planted py-spy"].finish()
    assert doctored.returncode == 1, doctored.stdout + doctored.stderr
    expected = {"py-spy"} | ({"py-spy, other users"} if os.geteuid() == 0 else set())
    assert expected <= set(doctored.failed())
    for name in expected:
        result = doctored.result(name)
        assert "could be replaced by another user" in result["found"], result
        assert "writable by group or others (mode 0777)" in result["found"], result
        assert "not run" in result["found"] and "only root can change" in result["fix"]
    found = doctored.result("py-spy")["found"]
    py_spy = Path(found.partition(", which the service would run as root")[0])
    assert py_spy.parent.name == "planted" and py_spy.name == "py-spy", found
    assert not (py_spy.parent.parent / "planted py-spy ran").exists()


def test_a_check_that_hangs_is_a_fail_not_a_hang() -> None:
    release = threading.Event()

    def hangs(settings: Settings) -> list[Result]:
        release.wait(60)
        return [Result("hangs", Status.OK, "answered after all")]

    def answers(settings: Settings) -> list[Result]:
        return [Result("answers", Status.OK, "at once")]

    checks = [Check("hangs", hangs, 0.2, "look at it by hand"), Check("answers", answers, 5, "")]
    try:
        results = run_checks(checks, Settings())
    finally:
        release.set()
    assert results == [
        Result("hangs", Status.FAIL, "no answer within 0.2 s", "look at it by hand"),
        Result("answers", Status.OK, "at once"),
    ]
