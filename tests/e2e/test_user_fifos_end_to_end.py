"""``--fifo-dir`` against the real service running as root: a second, unprivileged user
writes torch's FIFO lines into its own FIFO, which may only target its own processes.

The second user runs shell and Debian's /usr/bin/python3 with the standard library
only (the project's venv lives under /root, which it cannot enter). Its writer opens
the FIFO as torch's FileTimerClient does: ``O_WRONLY|O_NONBLOCK``, one write per line.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.app.service_process import (
    ServiceProcess,
    ask_as,
    refusals,
    scraped,
    wait_for_state,
)
from tests.sample_events import torch_line
from tests.second_user import SERVICE_AS_ROOT, SYSTEM_PYTHON, SecondUser
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

# What torch's FileTimerClient does, in the standard library: prints "ok" or the errno.
WRITER = """
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
except OSError as error:
    print(errno.errorcode[error.errno])
else:
    os.write(fd, bytes.fromhex(sys.argv[2]))
    os.close(fd)
    print("ok")
"""

pytestmark = SERVICE_AS_ROOT


@dataclass(frozen=True, slots=True)
class User(SecondUser):
    def write(self, path: Path, data: bytes) -> str:
        """Write ``data`` into the FIFO at ``path`` as this user: "ok" or the errno."""
        done = self.run([SYSTEM_PYTHON, "-c", WRITER, str(path), data.hex()])
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def request(pid: int, scope: str, after: float = 0.3, signal: int = 9) -> bytes:
    """One line of torch's wire format; ``after`` < 0 makes it a release."""
    return torch_line(pid, scope, -1.0 if after < 0 else time.time() + after, signal)


@pytest.fixture(scope="module")
def user() -> User:
    return User.named("ts-fifo-user")


@pytest.fixture(scope="module")
def other() -> User:
    return User.named("ts-fifo-other")


def serve(tmp_path: Path, shared_tmp: Path, *users: str) -> ServiceProcess:
    flags = ["--fifo", str(shared_tmp / "timers.fifo"), "--fifo-dir", str(shared_tmp / "fifos")]
    if users:
        flags += ["--fifo-users", ",".join(users)]
    return ServiceProcess(tmp_path, *flags, "--uds", str(shared_tmp / "ts.sock")).start()


@pytest.fixture
def service(tmp_path: Path, shared_tmp: Path, user: User, other: User) -> Iterator[ServiceProcess]:
    running = serve(tmp_path, shared_tmp, user.name, str(other.uid), "root")
    yield running
    running.stop()


def fifo_of(shared_tmp: Path, who: User | int) -> Path:
    return shared_tmp / "fifos" / str(who if isinstance(who, int) else who.uid)


def test_the_fifos_of_the_listed_users_are_theirs_alone(
    service: ServiceProcess, shared_tmp: Path, user: User, other: User
) -> None:
    directory = os.stat(shared_tmp / "fifos")
    assert (directory.st_uid, stat.S_IMODE(directory.st_mode)) == (0, 0o755)
    for uid in (user.uid, other.uid, 0):
        found = os.lstat(fifo_of(shared_tmp, uid))
        assert stat.S_ISFIFO(found.st_mode)
        assert (found.st_uid, stat.S_IMODE(found.st_mode)) == (uid, 0o600)


def test_a_user_gets_its_own_stuck_process_killed(
    service: ServiceProcess, shared_tmp: Path, user: User, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    stuck = user.sleeper()
    sleepers.append(stuck)
    assert user.write(fifo_of(shared_tmp, user), request(stuck.pid, "train-step")) == "ok"
    assert_sigkilled(stuck, 30)
    timer = wait_for_state(service.url, stuck.pid, "killed")
    assert (timer["source"], timer["scope_id"], timer["uid"]) == ("fifo", "train-step", user.uid)


def test_a_user_cannot_get_roots_process_signalled_or_released(
    service: ServiceProcess, shared_tmp: Path, user: User, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    roots = spawn_sleeper()
    sleepers.append(roots)
    path = fifo_of(shared_tmp, user)
    assert user.write(path, request(roots.pid, "attack", after=0.2)) == "ok"
    asker = f"the FIFO {path} of uid {user.uid}"
    assert wait_until(lambda: any(asker in r and "uid 0" in r for r in refusals(service)))
    assert httpx.get(service.url + "/timers", params={"pid": roots.pid}).json()["items"] == []
    # Root's own timer on it cannot be defused from the user's FIFO either.
    armed = httpx.post(
        service.url + "/timers", json={"pid": roots.pid, "scope_id": "job", "expires_in": 600}
    ).json()
    assert user.write(path, request(roots.pid, "job", after=-1)) == "ok"
    assert wait_until(lambda: any("may not release" in r for r in refusals(service)))
    assert httpx.get(f"{service.url}/timers/{armed['id']}").json()["state"] == "active"
    assert roots.poll() is None
    assert "refused a timer request from fifo" in service.log()


def test_a_user_cannot_write_into_another_uids_fifo_or_the_root_fifo(
    service: ServiceProcess, shared_tmp: Path, user: User, other: User
) -> None:
    line = request(os.getpid(), "attack")
    assert user.write(fifo_of(shared_tmp, other), line) == "EACCES"
    assert user.write(fifo_of(shared_tmp, 0), line) == "EACCES"
    assert user.write(shared_tmp / "timers.fifo", line) == "EACCES"
    assert other.write(fifo_of(shared_tmp, user), line) == "EACCES"


def test_a_user_cannot_replace_its_fifo(
    service: ServiceProcess, shared_tmp: Path, user: User
) -> None:
    path = fifo_of(shared_tmp, user)
    before = os.lstat(path)
    for command in (
        f"ln -sf /etc/shadow {path}",
        f"rm -f {path}",
        f"mv {path} {path}.old",
        f"mkfifo {shared_tmp / 'fifos' / 'planted'}",
    ):
        done = user.run(["sh", "-c", command])
        assert done.returncode != 0 and "ermission denied" in done.stderr, command
    after = os.lstat(path)
    assert (after.st_ino, after.st_uid, stat.S_ISFIFO(after.st_mode)) == (
        before.st_ino,
        user.uid,
        True,
    )


def test_a_planted_link_or_file_is_replaced_and_never_read(
    tmp_path: Path,
    shared_tmp: Path,
    user: User,
    other: User,
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    # What a user could do to a directory it could write: a link to a FIFO of its own
    # elsewhere (which a blocking open would hang on) and a regular file.
    serve(tmp_path, shared_tmp, user.name, other.name).stop()
    bait = shared_tmp / "bait.fifo"
    os.mkfifo(bait, 0o600)
    os.chown(bait, user.uid, user.gid)
    fifo_of(shared_tmp, user).unlink()
    fifo_of(shared_tmp, user).symlink_to(bait)
    fifo_of(shared_tmp, other).unlink()
    fifo_of(shared_tmp, other).write_text("not a fifo")
    os.chown(fifo_of(shared_tmp, other), other.uid, other.gid)
    service = serve(tmp_path, shared_tmp, user.name, other.name)  # would hang on the bait
    try:
        for who in (user, other):
            found = os.lstat(fifo_of(shared_tmp, who))
            assert stat.S_ISFIFO(found.st_mode) and found.st_uid == who.uid
        assert user.write(bait, b"{}\n") == "ENXIO"  # nobody reads the bait
        stuck = user.sleeper()
        sleepers.append(stuck)
        assert user.write(fifo_of(shared_tmp, user), request(stuck.pid, "after-plant")) == "ok"
        assert_sigkilled(stuck, 30)
        assert "replacing" in service.log()
    finally:
        service.stop()


def test_garbage_on_a_user_fifo_is_skipped_and_the_good_lines_apply(
    service: ServiceProcess, shared_tmp: Path, user: User, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    stuck, spared = user.sleeper(), user.sleeper()
    sleepers.extend([stuck, spared])
    garbage = b"\xff\xfe garbage\n{not json\n" + b'{"version": 1, "pid": "x"}\n'
    data = garbage + request(stuck.pid, "kill-me") + request(spared.pid, "spare", after=600)
    assert user.write(fifo_of(shared_tmp, user), data) == "ok"
    assert_sigkilled(stuck, 30)
    assert wait_for_state(service.url, spared.pid, "active")["scope_id"] == "spare"
    assert scraped(service.url, "timer_fifo_malformed_lines_total") == 3
    assert "skipping a malformed line on the FIFO" in service.log()


def test_a_user_asks_for_its_fifo_over_http_and_uses_it(
    tmp_path: Path, shared_tmp: Path, user: User, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    service = serve(tmp_path, shared_tmp)
    try:
        tcp = service.url.replace("http://", "tcp://")
        status, made = ask_as(user, tcp, "POST", "/fifos")
        assert (status, made) == (201, {"path": str(fifo_of(shared_tmp, user))}), made
        unix = "unix://" + str(shared_tmp / "ts.sock")
        assert ask_as(user, unix, "POST", "/fifos") == (200, made)
        stuck = user.sleeper()
        sleepers.append(stuck)
        assert user.write(Path(made["path"]), request(stuck.pid, "asked")) == "ok"
        assert_sigkilled(stuck, 30)
    finally:
        service.stop()


@pytest.mark.torch
def test_torchs_own_client_follows_torchelastic_timer_file(
    service: ServiceProcess, shared_tmp: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """The README's recipe, as torchrun's agent would run a worker (as root here: the
    second user cannot import torch from the venv)."""
    pytest.importorskip("torch.distributed.elastic.timer")
    code = (
        "import os, time\n"
        "from torch.distributed.elastic import timer\n"
        "timer.configure(timer.FileTimerClient(os.environ['TORCHELASTIC_TIMER_FILE']))\n"
        "with timer.expires(after=0.5):\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "TORCHELASTIC_TIMER_FILE": str(fifo_of(shared_tmp, 0))}
    stuck = subprocess.Popen([sys.executable, "-c", code], env=env)
    sleepers.append(stuck)
    assert_sigkilled(stuck, 60)
    assert wait_for_state(service.url, stuck.pid, "killed")["source"] == "fifo"
