"""Stack dump paths are hostile: the worker writes only into a directory of its own that
nobody else can write, and the service's read never blocks, follows a link, or reads a
file that is not the worker's user's.

The attacks that need another user run as the second user of tests/second_user.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dump_paths import isolate_dump_dirs, returns
from tests.second_user import SecondUser, shared_dir
from timer_core.diagnosis import dump_files
from timer_core.diagnosis.dump_dirs import DumpDirMaker
from timer_core.diagnosis.dump_files import (
    DumpPathError,
    open_dump_for_reading,
    open_dump_for_writing,
    worker_dump_dir,
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_dump_dirs(monkeypatch, tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---- the worker's side ----------------------------------------------------------------


def test_with_no_service_the_worker_makes_a_private_directory_and_file(tmp_path: Path) -> None:
    directory, may_create = worker_dump_dir(os.getuid())
    assert directory == tmp_path / "tmp" / f"timer-stacks-{os.getuid()}" and may_create
    os.close(open_dump_for_writing(directory, 4242, create=True))
    assert mode(directory) == 0o700 and mode(directory / "4242.stack") == 0o600
    assert os.stat(directory / "4242.stack").st_uid == os.geteuid()


def test_the_worker_uses_the_services_directory_once_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "no-service" / "stacks"
    made = DumpDirMaker(root).ensure(os.getuid(), os.getgid())
    assert made == root / str(os.getuid())
    assert worker_dump_dir(os.getuid()) == (made, False)
    assert mode(root) == 0o711 and mode(made) == 0o700
    # An explicit override wins over everything.
    monkeypatch.setenv(dump_files.STACK_DIR_ENV, str(tmp_path / "mine"))
    assert worker_dump_dir(os.getuid()) == (tmp_path / "mine" / str(os.getuid()), True)


def test_the_worker_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(DumpPathError, match="writable by group or others") as refused:
        open_dump_for_writing(directory, 4242, create=True)
    assert dump_files.STACK_DIR_ENV in str(refused.value)  # says what to do
    assert not (directory / "4242.stack").exists()


def test_the_worker_refuses_a_directory_that_is_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(DumpPathError, match="symbolic link"):
        open_dump_for_writing(tmp_path / "link", 4242, create=True)
    assert list(elsewhere.iterdir()) == []


# A root worker, started in a TMPDIR where anyone may add entries (like /tmp), with no
# service directory: it falls back to $TMPDIR/timer-stacks-0, which the attacker made.
ROOT_WORKER = """
import os, signal, sys
from pathlib import Path
from timer_core.diagnosis import dump_files
from timer_core.diagnosis.stack_capture import dump_stack_on
dump_files.SYSTEM_STACK_DIR = Path(sys.argv[1])  # this host's service plays no part
print(os.getpid(), flush=True)
sys.stdin.readline()  # the attacker plants its link for this pid meanwhile
try:
    print("wrote", dump_stack_on(signal.SIGUSR2), flush=True)
except dump_files.DumpPathError as error:
    print("refused", error, flush=True)
"""


def test_a_directory_made_first_by_another_user_cannot_aim_a_root_worker(
    second_user: SecondUser, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"  # under a root-only directory: only root could write it
    with shared_dir(0o1777) as tmp:
        squatted = tmp / "timer-stacks-0"
        second_user.run(["mkdir", "-m", "0755", str(squatted)], check=True)
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in (dump_files.STACK_DIR_ENV, "XDG_RUNTIME_DIR")
        }
        worker = subprocess.Popen(
            [sys.executable, "-c", ROOT_WORKER, str(tmp_path / "none")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**env, "TMPDIR": str(tmp)},
        )
        assert worker.stdout is not None and worker.stdin is not None
        pid = worker.stdout.readline().strip()
        second_user.run(["ln", "-s", str(victim), str(squatted / f"{pid}.stack")], check=True)
        output, _ = worker.communicate("go\n", timeout=30)
    assert output.startswith("refused"), output
    assert f"belongs to uid {second_user.uid}" in output
    assert dump_files.STACK_DIR_ENV in output  # and says what to do
    assert not victim.exists()


def test_the_worker_refuses_a_directory_of_another_user(
    second_user: SecondUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    with shared_dir(0o1777) as tmp:
        theirs = tmp / "stacks"
        second_user.run(["mkdir", "-m", "0700", str(theirs)], check=True)
        monkeypatch.setenv(dump_files.STACK_DIR_ENV, str(theirs))
        directory, _ = worker_dump_dir(0)
        second_user.run(["mkdir", "-m", "0777", str(directory)], check=True)
        with pytest.raises(DumpPathError, match=f"belongs to uid {second_user.uid}"):
            open_dump_for_writing(directory, 4242, create=True)


# ---- the service's side ---------------------------------------------------------------


@pytest.fixture
def dump_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "dumps"
    directory.mkdir(mode=0o700)
    yield directory


def read(directory: Path, pid: int = 4242, uid: int | None = None) -> bytes:
    def call() -> bytes:
        fd, _ = open_dump_for_reading([directory], pid, os.getuid() if uid is None else uid)
        try:
            return os.read(fd, 1000)
        finally:
            os.close(fd)

    return returns(call)


def test_the_service_reads_a_dump_of_the_workers_user(dump_dir: Path) -> None:
    (dump_dir / "4242.stack").write_text("Thread 0x1 (most recent call first):\n")
    assert read(dump_dir).startswith(b"Thread 0x1")


def test_a_fifo_at_the_dump_path_does_not_block_the_service(dump_dir: Path) -> None:
    os.mkfifo(dump_dir / "4242.stack")
    with pytest.raises(DumpPathError, match="not a regular file"):
        read(dump_dir)


def test_a_link_at_the_dump_path_is_not_followed(dump_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the-password-hash")
    (dump_dir / "4242.stack").symlink_to(secret)
    with pytest.raises(DumpPathError, match="symbolic link: not followed"):
        read(dump_dir)


def test_a_hard_link_at_the_dump_path_is_not_read(dump_dir: Path, tmp_path: Path) -> None:
    other = dump_dir / "other"
    other.write_text("some other file of the same user")
    os.link(other, dump_dir / "4242.stack")
    with pytest.raises(DumpPathError, match="hard links"):
        read(dump_dir)


def test_a_dump_older_than_its_worker_is_not_trusted(dump_dir: Path) -> None:
    stale = dump_dir / "4242.stack"
    stale.write_text("left by an earlier process with this pid")
    os.utime(stale, (1000.0, 1000.0))

    def call() -> object:
        return open_dump_for_reading([dump_dir], 4242, os.getuid(), started_at=2000.0)

    with pytest.raises(DumpPathError, match="older than the worker"):
        returns(call)


def test_no_dump_file_says_where_it_looked(dump_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DumpPathError, match="no dump file") as missing:
        open_dump_for_reading([dump_dir, tmp_path / "absent"], 4242, os.getuid())
    assert str(dump_dir) in str(missing.value)


def test_the_service_refuses_a_directory_or_file_not_of_the_workers_user(
    second_user: SecondUser, tmp_path: Path
) -> None:
    with shared_dir(0o1777) as tmp:
        theirs = tmp / "theirs"
        second_user.run(["mkdir", "-m", "0700", str(theirs)], check=True)
        second_user.run(["sh", "-c", f"echo forged > {theirs}/4242.stack"], check=True)
        # A dump of a root worker in another user's directory: refused, not read.
        with pytest.raises(DumpPathError, match=f"belongs to uid {second_user.uid}"):
            read(theirs, uid=0)
    # A file of another user in the root worker's own directory: refused too.
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    (mine / "4242.stack").write_text("forged")
    os.chown(mine / "4242.stack", second_user.uid, second_user.gid)
    with pytest.raises(DumpPathError, match=f"belongs to uid {second_user.uid}, not uid 0"):
        read(mine, uid=0)
