"""Every place the service (as root) makes or writes files in is refused when it lies
below a directory a real second user owns: at start, by the real ``timer-service``
process, in one line that names the directory, and by each part that makes things
there, which makes nothing. And a token file another user owns is refused."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.db.private_files import secure_sqlite_files
from app.server import bind_unix_socket
from tests.app.service_process import refused_start
from tests.second_user import SERVICE_AS_ROOT, SecondUser, shared_dir
from timer_core.safe_dirs import UnsafeDirectoryError
from timer_core.sources.fifo_dir import FifoDirectory, FifoDirError
from timer_core.sources.fifo_source import create_fifo

pytestmark = SERVICE_AS_ROOT


@pytest.fixture
def theirs(second_user: SecondUser) -> Iterator[Path]:
    """A directory the second user owns (mode 0755), in a directory of root's."""
    with shared_dir() as shared:
        home = shared / "home"
        os.mkdir(home, 0o755)
        os.chown(home, second_user.uid, second_user.gid)
        yield home


# (flag, its value below the user's directory ``d``, what the refusal calls the place)
PLACES = [
    ("--stack-dir", lambda d: str(d / "run" / "stacks"), "--stack-dir"),
    ("--fifo-dir", lambda d: str(d / "fifos"), "--fifo-dir"),
    ("--fifo", lambda d: str(d / "sub" / "timers.fifo"), "--fifo's directory"),
    ("--uds", lambda d: str(d / "sub" / "ts.sock"), "--uds's directory"),
    ("--db-url", lambda d: f"sqlite:///{d / 'db' / 'timers.db'}", "the database's directory"),
]


@pytest.mark.parametrize(("flag", "value", "what"), PLACES, ids=[p[0] for p in PLACES])
def test_the_service_refuses_to_start_below_another_users_directory(
    tmp_path: Path,
    theirs: Path,
    second_user: SecondUser,
    flag: str,
    value: Callable[[Path], str],
    what: str,
) -> None:
    refused = refused_start(tmp_path, flag, value(theirs))
    assert refused.returncode != 0
    [line] = [text for text in refused.stderr.splitlines() if text.startswith("timer-service:")]
    assert line.startswith(f"timer-service: {what} ")
    assert f"lies below {theirs}, which belongs to uid {second_user.uid}" in line
    assert "use a directory that only root or uid 0 can change" in line  # what to do
    assert os.listdir(theirs) == []  # nothing made there


# Each part that makes something, run in this (root) process below the user's directory.
MAKERS: list[tuple[str, Callable[[Path], object]]] = [
    ("fifo-dir", lambda d: FifoDirectory(str(d / "fifos"))),
    ("fifo", lambda d: create_fifo(str(d / "sub" / "timers.fifo"))),
    ("uds", lambda d: bind_unix_socket(str(d / "sub" / "ts.sock"))),
    ("database", lambda d: secure_sqlite_files(f"sqlite:///{d / 'db' / 'timers.db'}")),
]


@pytest.mark.parametrize(("name", "make"), MAKERS, ids=[m[0] for m in MAKERS])
def test_each_part_refuses_and_makes_nothing_below_another_users_directory(
    theirs: Path, second_user: SecondUser, name: str, make: Callable[[Path], object]
) -> None:
    with pytest.raises((UnsafeDirectoryError, FifoDirError, SystemExit, RuntimeError)) as refused:
        make(theirs)
    assert f"{theirs}, which belongs to uid {second_user.uid}" in str(refused.value)
    assert os.listdir(theirs) == []


def test_a_token_file_another_user_owns_is_refused(tmp_path: Path, second_user: SecondUser) -> None:
    with shared_dir(0o1777) as sticky:
        token_file = sticky / "token"
        # The user's own file, private to it (0600): the service (root) can still read it.
        second_user.run(["sh", "-c", f"umask 077; echo chosen > {token_file}"], check=True)
        assert os.stat(token_file).st_uid == second_user.uid
        refused = refused_start(tmp_path, "--token-file", str(token_file))
    assert refused.returncode != 0
    assert f"the token file {token_file} belongs to uid {second_user.uid}" in refused.stderr
    assert "chown 0" in refused.stderr and "chmod 600" in refused.stderr
