"""A PostgreSQL server of a test's own, to stop, hang and cut off (issue 26).

The session's server (tests/postgres.py) is shared with every other test and with
whatever else runs on this machine: stopping it is not an option. This one is made
with ``initdb`` in a temporary directory, listens only on a Unix socket in that
directory (no TCP port), and runs as the ``postgres`` user (PostgreSQL refuses to run
as root). Stopping, hanging (SIGSTOP) or cutting its connections touches nothing else:
the only pids it signals are its own postmaster's and that postmaster's children.

The role has a password (``PASSWORD``) that the URL carries, so tests can check that
it is never logged; the server trusts local connections, so it is not checked.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import URL

__all__ = ["PASSWORD", "PrivatePostgres", "private_postgres"]

BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "S3CRETPW-never-logged"
_USER = "postgres"


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"

    @property
    def url(self) -> str:
        """The service's ``--db-url``, password included."""
        return URL.create(
            "postgresql+psycopg",
            username=_USER,
            password=PASSWORD,
            database="postgres",
            query={"host": str(self.root)},
        ).render_as_string(hide_password=False)

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", _USER, "--", *command],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def init(self) -> None:
        self._as_postgres(
            str(BIN / "initdb"), "-D", str(self.data), "-U", _USER, "--auth=trust", "--no-sync"
        )

    def start(self) -> None:
        options = f"-k {self.root} -c listen_addresses='' -c fsync=off"
        self._as_postgres(
            str(BIN / "pg_ctl"), "start", "-w", "-D", str(self.data), "-l", str(self.log),
            "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        """A clean, fast stop: connections are closed and new ones refused."""
        self._as_postgres(str(BIN / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data))

    def processes(self) -> list[psutil.Process]:
        """This server's postmaster and its children (backends and helpers), nothing else."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        assert postmaster.username() == _USER and str(self.data) in postmaster.cmdline()
        return [postmaster, *postmaster.children()]

    def hang(self) -> list[psutil.Process]:
        """SIGSTOP the postmaster and every process of it: it refuses nothing, answers
        nothing. Returns them, for ``resume``."""
        stopped = self.processes()
        for process in stopped:
            os.kill(process.pid, signal.SIGSTOP)
        return stopped

    @staticmethod
    def resume(stopped: list[psutil.Process]) -> None:
        for process in stopped:
            os.kill(process.pid, signal.SIGCONT)

    def terminate_connections(self) -> int:
        """``pg_terminate_backend`` on every client connection; how many were cut."""
        import psycopg

        with psycopg.connect(self.url.replace("+psycopg", ""), autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchone()
        return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip(f"needs root and PostgreSQL 15's binaries in {BIN}")
    try:
        pwd.getpwnam(_USER)
    except KeyError:
        pytest.skip(f"needs the {_USER} user to run a private PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="private-pg-"))
    shutil.chown(root, _USER)
    server = PrivatePostgres(root)
    server.init()
    server.start()
    try:
        yield server
    finally:
        try:
            for process in server.processes():  # resumed, in case a test failed mid-hang
                os.kill(process.pid, signal.SIGCONT)
            server.stop()
        except (OSError, subprocess.CalledProcessError, psutil.Error):
            pass
        shutil.rmtree(root, ignore_errors=True)
