"""A start the real ``timer-service serve`` refuses ends with one line on stderr,
``timer-service: ...``, naming what is wrong and what to do; exit status 1, no
traceback, the log lines before it in the log's format, and nothing left holding the
database (a later start takes it without "taking over").

The refused starts are independent, so the module starts them all at once (each is a
real process, most of whose time is Python's imports) and each test reads its own.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.app.service_process import ServiceProcess, free_port
from tests.conftest import migrated_engine
from tests.second_user import SecondUser, shared_dir

PASSWORD = "hunter2-not-shown"
# A log record's line (app.ops.logs.FORMAT).
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S"
)


@dataclass
class Start:
    """One refused start: its flags, environment and, for another user, a prefix."""

    flags: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    prefix: tuple[str, ...] = ()
    process: subprocess.Popen[str] | None = None
    stderr: str = ""

    def launch(self, workdir: Path) -> None:
        command = [*self.prefix, sys.executable, "-m", "app.cli", "serve", *self.flags]
        self.process = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.env},
        )

    def finish(self) -> None:
        assert self.process is not None
        try:
            _, self.stderr = self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, self.stderr = self.process.communicate()


def refusal(start: Start) -> str:
    """The refusal's one line, once it is checked to be the refused start's whole say."""
    assert start.process is not None
    assert start.process.returncode == 1, start.stderr
    assert "Traceback" not in start.stderr
    *before, last = [line for line in start.stderr.splitlines() if line.strip()]
    assert last.startswith("timer-service: "), start.stderr
    # Whatever came before is the log's own lines, none an error of the start.
    assert all(LINE.match(line) and " ERROR " not in line for line in before), start.stderr
    return last


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refused")


@pytest.fixture(scope="module")
def held_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


@pytest.fixture(scope="module")
def root_owned() -> Iterator[Path]:
    """A directory every user can reach and only root can write (0755)."""
    with shared_dir() as path:
        yield path


@pytest.fixture(scope="module")
def starts(workdir: Path, held_port: int, root_owned: Path) -> dict[str, Start]:
    def db(name: str) -> tuple[str, str]:
        return ("--db-url", f"sqlite:///{workdir / name}")

    newer = workdir / "newer.db"
    engine = migrated_engine(newer)
    engine.dispose()
    with sqlite3.connect(newer) as connection:  # as a later version leaves it
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    starts = {
        # At level warning, where the refusal is the only line.
        "port in use": Start(("--port", str(held_port), *db("port.db"), "--log-level", "warning")),
        "port out of range": Start(("--port", "99999", *db("range.db"))),
        "host not of this host": Start(("--port", "0", "--host", "192.0.2.1", *db("host.db"))),
        "unknown fifo user": Start(
            (
                "--port",
                "0",
                *db("fifo-user.db"),
                "--fifo-dir",
                str(workdir / "fifos"),
                "--fifo-users",
                "no-such-user-x9",
            )
        ),
        "fifo directory missing": Start(
            ("--port", "0", *db("fifo.db"), "--fifo", str(workdir / "missing" / "timers.fifo"))
        ),
        "mysql url": Start(("--port", "0", "--db-url", "mysql://ops@127.0.0.1/timers")),
        "not a url": Start(("--port", "0"), env={"TIMER_SERVICE_DB_URL": f"ops:{PASSWORD}"}),
        "postgresql unreachable": Start(
            ("--port", "0", "--db-wait", "0"),
            env={
                "TIMER_SERVICE_DB_URL": (
                    f"postgresql+psycopg://ops:{PASSWORD}@127.0.0.1:{free_port()}/timers"
                )
            },
        ),
        "database of a newer version": Start(("--port", "0", *db("newer.db"))),
        "token file missing": Start(
            ("--port", "0", *db("token.db"), "--token-file", str(workdir / "no-token"))
        ),
    }
    if os.geteuid() == 0:
        other = SecondUser.named("timer-test-other")
        # That user may not reach the venv's interpreter (under /root, 0700): it reads and
        # searches as root may (CAP_DAC_READ_SEARCH) and writes only as itself.
        starts["database directory not writable"] = Start(
            ("--port", "0", "--db-url", f"sqlite:///{root_owned / 'timers.db'}"),
            prefix=(
                *other.argv([]),
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
            ),
        )
    for start in starts.values():
        start.launch(workdir)
    for start in starts.values():
        start.finish()
    return starts


def test_a_port_in_use_is_named_with_what_to_do(
    starts: dict[str, Start], held_port: int, workdir: Path
) -> None:
    start = starts["port in use"]
    line = refusal(start)
    assert start.stderr.strip().splitlines() == [line]  # --log-level warning: nothing else
    assert f"127.0.0.1:{held_port} is already in use" in line
    assert "pass another --port" in line
    # The database it claimed first is let go: a start on it takes it over from no one.
    service = ServiceProcess(workdir, "--log-level", "info")
    service.db_url = f"sqlite:///{workdir / 'port.db'}"
    service.start()
    try:
        assert "taking over" not in service.log()
    finally:
        service.stop()


def test_a_port_out_of_range_is_refused_before_anything(
    starts: dict[str, Start], workdir: Path
) -> None:
    start = starts["port out of range"]
    assert start.process is not None and start.process.returncode == 1
    assert start.stderr.strip().splitlines() == [
        "--port 99999 is not a port: give 1-65535 (0: any free one)"
    ]
    assert not (workdir / "range.db").exists()


def test_a_host_address_this_host_lacks_is_named(starts: dict[str, Start]) -> None:
    line = refusal(starts["host not of this host"])
    assert "cannot listen on 192.0.2.1:0: 192.0.2.1 is not an address of this host" in line
    assert "pass --host with one of its addresses" in line


def test_an_unknown_fifo_user_is_named_before_the_database_is_made(
    starts: dict[str, Start], workdir: Path
) -> None:
    line = refusal(starts["unknown fifo user"])
    assert "--fifo-users: there is no user 'no-such-user-x9' on this host" in line
    assert "create that user first, or leave it out of --fifo-users" in line
    assert not (workdir / "fifo-user.db").exists()


def test_a_fifo_in_a_missing_directory_names_the_directory(
    starts: dict[str, Start], workdir: Path
) -> None:
    line = refusal(starts["fifo directory missing"])
    fifo, missing = workdir / "missing" / "timers.fifo", workdir / "missing"
    assert line == (
        f"timer-service: --fifo {fifo}: its directory {missing} does not exist; "
        f"create it (mkdir -p {missing}) or choose another --fifo path"
    )


@pytest.mark.parametrize("name", ["mysql url", "not a url"])
def test_a_database_url_the_service_cannot_use_says_which_it_can(
    starts: dict[str, Start], name: str
) -> None:
    line = refusal(starts[name])
    assert "give sqlite:///PATH" in line and "postgresql+psycopg://" in line
    assert PASSWORD not in starts[name].stderr


def test_an_unreachable_postgresql_is_one_line_without_its_password(
    starts: dict[str, Start],
) -> None:
    line = refusal(starts["postgresql unreachable"])
    assert line.startswith("timer-service: cannot reach the database postgresql+psycopg://ops:")
    assert "--db-wait SECONDS" in line
    assert PASSWORD not in starts["postgresql unreachable"].stderr


def test_a_database_a_newer_version_migrated_says_to_run_that_version(
    starts: dict[str, Start],
) -> None:
    line = refusal(starts["database of a newer version"])
    assert "is at revision 9999, which this timer-service does not know" in line
    assert "run that version (or a newer one) here" in line


def test_a_missing_token_file_is_one_line(starts: dict[str, Start], workdir: Path) -> None:
    line = refusal(starts["token file missing"])
    assert f"cannot read the token file {workdir / 'no-token'}: No such file" in line
    assert "--token-file" in line


def test_a_database_directory_another_user_cannot_write(
    starts: dict[str, Start], root_owned: Path
) -> None:
    if "database directory not writable" not in starts:
        pytest.skip("needs root: runs the service as a second user (setpriv)")
    line = refusal(starts["database directory not writable"])
    assert re.match(
        rf"timer-service: cannot open or write the database sqlite:///{root_owned}/timers\.db: ",
        line,
    )
    assert "pass another --db-url" in line
    assert os.listdir(root_owned) == []


def test_a_port_another_program_took_while_it_started_is_named(tmp_path: Path) -> None:
    """Two programs may both bind one port while neither listens yet (SO_REUSEADDR): a
    service that finds its port taken once it has started says so and stops, rather
    than run on with no TCP port (uvloop does not report the failed listen). Its start
    is held at its first write by a transaction of the test's, while the test takes
    the port."""
    database = tmp_path / "service.db"
    migrated_engine(database).dispose()
    port = free_port()
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the service's first write waits for it
    start = Start(
        ("--port", str(port), "--db-url", f"sqlite:///{database}"),
        env={"TIMER_SERVICE_DB_BUSY_TIMEOUT": "120"},
    )
    start.launch(tmp_path)
    assert start.process is not None and start.process.stderr is not None
    with socket.socket() as other:
        try:
            bound = f"timer-service on http://127.0.0.1:{port} "
            seen = []
            for line in start.process.stderr:
                seen.append(line)
                if bound in line:
                    break
            assert bound in "".join(seen), "".join(seen)
            # Bound, not listening: the start goes on (as another's could, at once).
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", port))
            other.listen()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            start.finish()
        start.stderr = "".join(seen) + start.stderr
    line = refusal(start)
    assert f"127.0.0.1:{port} is already in use" in line
    assert "timer-service started:" in start.stderr  # refused after its start, not before
