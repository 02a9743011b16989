"""The real ``timer-service`` from start to stop, as an operator reads it: one line for
the migrations, "shutdown complete" and exit status 0 on Ctrl-C (SIGINT) and SIGTERM,
also while it still waits for its database, and ``--version``."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import app
from app.db.database import MIGRATIONS_DIR, make_engine
from app.server import _StopSignals
from tests.app.service_process import ServiceProcess, free_port
from tests.waiting import wait_until
from tests.workers import spawn_sleeper

# An older schema that a service of this version migrates from.
OLD_REVISION = "0012"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


HEAD = ScriptDirectory.from_config(_alembic_config()).get_current_head()


def migrate_to(database: Path, revision: str) -> None:
    """The SQLite file ``database`` at ``revision``, as an older version left it."""
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()
    database.chmod(0o600)  # the service keeps it private (app.db.private_files)


def stopped_by(service: ServiceProcess, signum: signal.Signals) -> list[str]:
    """Send ``signum`` to the running service; its log's lines once it has exited 0."""
    assert service.process is not None
    service.process.send_signal(signum)
    assert service.process.wait(60) == 0, service.log()
    return service.log().splitlines()


def migration_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " app.service: database " in line]


def assert_clean_stop(lines: list[str], signum: signal.Signals) -> None:
    text = "\n".join(lines)
    assert "Traceback" not in text and " ERROR " not in text, text
    assert lines[-1].endswith(f" INFO app.server: shutdown complete ({signum.name})"), text


def test_ctrl_c_after_migrating_from_an_older_schema(tmp_path: Path) -> None:
    migrate_to(tmp_path / "service.db", OLD_REVISION)
    service = ServiceProcess(tmp_path).start()
    try:
        lines = stopped_by(service, signal.SIGINT)
    finally:
        service.stop()
    assert_clean_stop(lines, signal.SIGINT)
    [migrated] = migration_lines(lines)
    assert migrated.endswith(f"database migrated from {OLD_REVISION} to {HEAD}")
    assert not any("alembic" in line for line in lines)  # its eight lines, with literal \n


def test_sigterm_then_a_restart_finds_the_database_up_to_date(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path).start()
    try:
        first = stopped_by(service, signal.SIGTERM)
        assert_clean_stop(first, signal.SIGTERM)
        [created] = migration_lines(first)
        assert created.endswith(f"database created at {HEAD}")
        (tmp_path / "service.log").unlink()
        service.start()
        again = stopped_by(service, signal.SIGTERM)
    finally:
        service.stop()
    assert_clean_stop(again, signal.SIGTERM)
    [current] = migration_lines(again)
    assert current.endswith(f"database at {HEAD}, up to date")
    # The first let its database go: the restart took over from no one.
    assert not any("taking over" in line for line in again)


def test_sigterm_writes_the_events_the_database_refused_until_then(tmp_path: Path) -> None:
    """An arm answered 202 (the database locked by another program: not recorded yet)
    is written by the stop SIGTERM begins, before the process exits."""
    service = ServiceProcess(tmp_path).start()
    worker = spawn_sleeper()
    holder = sqlite3.connect(tmp_path / "service.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # every write of the service waits for it
        answer = httpx.post(
            service.url + "/timers",
            json={"pid": worker.pid, "scope_id": "held", "expires_in": 300},
            timeout=60,
        )
        assert answer.status_code == 202 and answer.json()["recorded"] is False, answer.text
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        # The stop has begun while nothing could be written yet.
        assert wait_until(lambda: "Waiting for application shutdown" in service.log(), 60)
        holder.execute("ROLLBACK")
        assert service.process.wait(60) == 0, service.log()
    finally:
        holder.close()
        worker.kill()
        worker.wait()
        service.stop()
    assert_clean_stop(service.log().splitlines(), signal.SIGTERM)
    with contextlib.closing(sqlite3.connect(tmp_path / "service.db")) as database:
        written = database.execute("SELECT kind FROM events").fetchall()
    assert written == [("acquired",)]


def test_sigterm_while_it_waits_for_its_database(tmp_path: Path) -> None:
    """Stopped before it has started (here: waiting --db-wait for a PostgreSQL that
    refuses connections), it ends the same way."""
    url = f"postgresql+psycopg://ops@127.0.0.1:{free_port()}/timers"
    waiting = threading.Event()
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0", "--db-wait", "300"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIMER_SERVICE_DB_URL": url},
    ) as process:

        def read() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                lines.append(line.rstrip("\n"))
                if "waiting up to 300 s for the database" in line:
                    waiting.set()

        reader = threading.Thread(target=read)
        reader.start()
        try:
            assert waiting.wait(120), lines
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0, lines
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            reader.join()
    assert_clean_stop(lines, signal.SIGTERM)


def test_a_signal_interrupts_only_a_wait_and_only_once() -> None:
    """Ctrl-C interrupts the start only while it waits (for its database, migrating);
    elsewhere it is noted, and the next wait, or the next safe point, ends the start.
    Another, during the stop that follows, is only noted: that stop runs to its end."""
    before = {signum: signal.getsignal(signum) for signum in _StopSignals.HANDLED}
    try:
        noted = _StopSignals()
        noted.install()
        signal.raise_signal(signal.SIGTERM)  # outside a wait: noted, not raised
        assert noted.said() == " (SIGTERM)"
        with pytest.raises(KeyboardInterrupt), noted.interruptible():
            pytest.fail("a wait after the signal must not begin")
        waiting = _StopSignals()
        waiting.install()
        with pytest.raises(KeyboardInterrupt), waiting.interruptible():
            signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # during the stop: noted, not raised
        assert waiting.said() == " (SIGTERM)"
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_a_signal_while_it_re_arms_stops_it_once_started(tmp_path: Path) -> None:
    """SIGINT after the waits (here: the start held at its first write by the test's
    transaction) does not cut the start short halfway: the start ends, then the stop
    runs, uvicorn never serves, and the --uds socket file is gone."""
    database, uds = tmp_path / "service.db", tmp_path / "ts.sock"
    migrate_to(database, "head")
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the service's first write waits for it
    command = [sys.executable, "-m", "app.cli", "serve", "--port", "0", "--uds", str(uds)]
    env = {
        **os.environ,
        "TIMER_SERVICE_DB_URL": f"sqlite:///{database}",
        "TIMER_SERVICE_DB_BUSY_TIMEOUT": "120",
    }
    lines: list[str] = []
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stderr is not None
            for line in process.stderr:
                lines.append(line.rstrip("\n"))
                if f"database at {HEAD}, up to date" in line:
                    break  # past the waits
            process.send_signal(signal.SIGINT)
            holder.execute("ROLLBACK")
            lines.extend(line.rstrip("\n") for line in process.stderr)
            assert process.wait(60) == 0, lines
        finally:
            holder.close()
            if process.poll() is None:
                process.kill()
                process.wait()
    assert_clean_stop(lines, signal.SIGINT)
    text = "\n".join(lines)
    assert "timer-service started:" in text  # the start ran to its end
    assert "Application startup complete" not in text  # and it stopped before serving
    assert not uds.exists()


def signal_dispositions(pid: int) -> tuple[set[int], set[int]]:
    """The signals ``pid`` ignores and those it catches (/proc/PID/status)."""
    masks = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("SigIgn", "SigCgt"):
            mask = int(value, 16)
            masks[name] = {signum for signum in range(1, 65) if mask >> (signum - 1) & 1}
    return masks["SigIgn"], masks["SigCgt"]


def test_a_sigint_the_parent_ignored_stays_ignored_while_it_serves(tmp_path: Path) -> None:
    """Started with SIGINT ignored (a script's `(setsid cmd &)`, nohup-like wrappers: the
    same SigIgn as the `trap` here), it stays ignored while uvicorn serves too: a SIGINT
    then leaves it serving, and only SIGTERM stops it."""
    ignoring = ("sh", "-c", 'trap "" INT; exec "$0" "$@"')
    service = ServiceProcess(tmp_path, prefix=ignoring).start()
    try:
        process = service.process
        assert process is not None
        ignored, caught = signal_dispositions(process.pid)  # serving: uvicorn's turn
        assert signal.SIGINT in ignored and signal.SIGINT not in caught
        assert signal.SIGTERM in caught
        process.send_signal(signal.SIGINT)  # discarded by the kernel
        # Caught, it would begin the stop within uvicorn's next tick (0.1 s).
        stopping = wait_until(
            lambda: process.poll() is not None or "Shutting down" in service.log(), 2
        )
        assert not stopping, service.log()
        assert httpx.get(service.url + "/healthz", timeout=30).status_code == 200
        lines = stopped_by(service, signal.SIGTERM)
    finally:
        service.stop()
    assert_clean_stop(lines, signal.SIGTERM)
    assert not any("SIGINT" in line for line in lines)


def test_ipv6_loopback_on_a_port_the_kernel_picks(tmp_path: Path) -> None:
    """--host ::1 --port 0: the log names the URL it serves, with the port picked and
    the address in brackets, and that URL answers."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("this host has no IPv6 loopback")
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "::1", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIMER_SERVICE_DB_URL": f"sqlite:///{tmp_path / 'service.db'}"},
    ) as process:
        try:
            assert process.stderr is not None
            for line in process.stderr:
                lines.append(line.rstrip("\n"))
                if "Application startup complete" in line:
                    break
            [url] = [
                found.group(1)
                for found in map(re.compile(r"timer-service on (http://\S+) ").search, lines)
                if found
            ]
            assert re.fullmatch(r"http://\[::1\]:[1-9]\d*", url), url
            assert httpx.get(url + "/healthz", timeout=30).status_code == 200
            process.send_signal(signal.SIGTERM)
            lines.extend(line.rstrip("\n") for line in process.stderr)
            assert process.wait(60) == 0, lines
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert_clean_stop(lines, signal.SIGTERM)


def test_version() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "app.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"timer-service {app.__version__}\n"
    assert app.__version__ == importlib.metadata.version("timer-service")
