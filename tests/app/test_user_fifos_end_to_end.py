"""``--fifo-dir`` against the real service running as root: a second, unprivileged user
writes torch's FIFO lines into its own FIFO, which may only target its own processes.

The second user runs shell and Debian's /usr/bin/python3 with the standard library
only (the project's venv lives under /root, which it cannot enter). Its writer opens
the FIFO as torch's FileTimerClient does: ``O_WRONLY|O_NONBLOCK``, one write per line.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.service_process import ServiceProcess, scraped, wait_for_state
from tests.second_user import as_user, ensure_user
from tests.waiting import wait_until
from tests.workers import assert_sigkilled, spawn_sleeper

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENT = Path(__file__).with_name("second_user_client.py")
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

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the service runs as root"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
    pytest.mark.skipif(
        not os.path.exists(SYSTEM_PYTHON), reason="needs Debian's python3 for the second user"
    ),
]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            as_user(self.uid, self.gid, argv), capture_output=True, text=True, timeout=30
        )

    def write(self, path: Path, data: bytes) -> str:
        """Write ``data`` into the FIFO at ``path`` as this user: "ok" or the errno."""
        done = self.run([SYSTEM_PYTHON, "-c", WRITER, str(path), data.hex()])
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def spawn(self) -> subprocess.Popen[bytes]:
        """A process of this user's own (setpriv execs sleep: the pid is sleep's)."""
        return subprocess.Popen(as_user(self.uid, self.gid, ["sleep", "600"]))


def request(pid: int, scope: str, after: float = 0.3, signal: int = 9) -> bytes:
    """One line of torch's wire format; ``after`` < 0 makes it a release."""
    expiration_time = -1.0 if after < 0 else time.time() + after
    payload = {
        "version": 1,
        "pid": pid,
        "scope_id": scope,
        "expiration_time": expiration_time,
        "signal": signal,
    }
    return (json.dumps(payload) + "\n").encode()


@pytest.fixture(scope="module")
def user() -> User:
    return User("ts-fifo-user", *ensure_user("ts-fifo-user"))


@pytest.fixture(scope="module")
def other() -> User:
    return User("ts-fifo-other", *ensure_user("ts-fifo-other"))


@pytest.fixture
def shared() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is private to root, and the users must reach
    # their FIFOs (and find the root FIFO closed to them for its own mode's sake).
    path = Path(tempfile.mkdtemp(prefix="ts-fifos-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def serve(tmp_path: Path, shared: Path, *users: str) -> ServiceProcess:
    flags = ["--fifo", str(shared / "timers.fifo"), "--fifo-dir", str(shared / "fifos")]
    if users:
        flags += ["--fifo-users", ",".join(users)]
    return ServiceProcess(tmp_path, *flags, "--uds", str(shared / "ts.sock")).start()


@pytest.fixture
def service(tmp_path: Path, shared: Path, user: User, other: User) -> Iterator[ServiceProcess]:
    running = serve(tmp_path, shared, user.name, str(other.uid), "root")
    yield running
    running.stop()


def refusals(service: ServiceProcess) -> list[str]:
    items = httpx.get(service.url + "/events", params={"kind": "refused"}).json()["items"]
    return [str(item["detail"].get("reason", "")) for item in items]


def fifo_of(shared: Path, who: User | int) -> Path:
    return shared / "fifos" / str(who if isinstance(who, int) else who.uid)


def test_the_fifos_of_the_listed_users_are_theirs_alone(
    service: ServiceProcess, shared: Path, user: User, other: User
) -> None:
    directory = os.stat(shared / "fifos")
    assert (directory.st_uid, stat.S_IMODE(directory.st_mode)) == (0, 0o755)
    for uid in (user.uid, other.uid, 0):
        found = os.lstat(fifo_of(shared, uid))
        assert stat.S_ISFIFO(found.st_mode)
        assert (found.st_uid, stat.S_IMODE(found.st_mode)) == (uid, 0o600)


def test_a_user_gets_its_own_stuck_process_killed(
    service: ServiceProcess, shared: Path, user: User, processes: list[subprocess.Popen[bytes]]
) -> None:
    stuck = user.spawn()
    processes.append(stuck)
    assert user.write(fifo_of(shared, user), request(stuck.pid, "train-step")) == "ok"
    assert_sigkilled(stuck, 30)
    timer = wait_for_state(service.url, stuck.pid, "killed")
    assert (timer["source"], timer["scope_id"], timer["uid"]) == ("fifo", "train-step", user.uid)


def test_a_user_cannot_get_roots_process_signalled_or_released(
    service: ServiceProcess, shared: Path, user: User, processes: list[subprocess.Popen[bytes]]
) -> None:
    roots = spawn_sleeper()
    processes.append(roots)
    path = fifo_of(shared, user)
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
    service: ServiceProcess, shared: Path, user: User, other: User
) -> None:
    line = request(os.getpid(), "attack")
    assert user.write(fifo_of(shared, other), line) == "EACCES"
    assert user.write(fifo_of(shared, 0), line) == "EACCES"
    assert user.write(shared / "timers.fifo", line) == "EACCES"
    assert other.write(fifo_of(shared, user), line) == "EACCES"


def test_a_user_cannot_replace_its_fifo(service: ServiceProcess, shared: Path, user: User) -> None:
    path = fifo_of(shared, user)
    before = os.lstat(path)
    for command in (
        f"ln -sf /etc/shadow {path}",
        f"rm -f {path}",
        f"mv {path} {path}.old",
        f"mkfifo {shared / 'fifos' / 'planted'}",
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
    shared: Path,
    user: User,
    other: User,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    # What a user could do to a directory it could write: a link to a FIFO of its own
    # elsewhere (which a blocking open would hang on) and a regular file.
    serve(tmp_path, shared, user.name, other.name).stop()
    bait = shared / "bait.fifo"
    os.mkfifo(bait, 0o600)
    os.chown(bait, user.uid, user.gid)
    fifo_of(shared, user).unlink()
    fifo_of(shared, user).symlink_to(bait)
    fifo_of(shared, other).unlink()
    fifo_of(shared, other).write_text("not a fifo")
    os.chown(fifo_of(shared, other), other.uid, other.gid)
    service = serve(tmp_path, shared, user.name, other.name)  # would hang on the bait
    try:
        for who in (user, other):
            found = os.lstat(fifo_of(shared, who))
            assert stat.S_ISFIFO(found.st_mode) and found.st_uid == who.uid
        assert user.write(bait, b"{}\n") == "ENXIO"  # nobody reads the bait
        stuck = user.spawn()
        processes.append(stuck)
        assert user.write(fifo_of(shared, user), request(stuck.pid, "after-plant")) == "ok"
        assert_sigkilled(stuck, 30)
        assert "replacing" in service.log()
    finally:
        service.stop()


def test_garbage_on_a_user_fifo_is_skipped_and_the_good_lines_apply(
    service: ServiceProcess, shared: Path, user: User, processes: list[subprocess.Popen[bytes]]
) -> None:
    stuck, spared = user.spawn(), user.spawn()
    processes.extend([stuck, spared])
    garbage = b"\xff\xfe garbage\n{not json\n" + b'{"version": 1, "pid": "x"}\n'
    data = garbage + request(stuck.pid, "kill-me") + request(spared.pid, "spare", after=600)
    assert user.write(fifo_of(shared, user), data) == "ok"
    assert_sigkilled(stuck, 30)
    assert wait_for_state(service.url, spared.pid, "active")["scope_id"] == "spare"
    assert scraped(service.url, "timer_fifo_malformed_lines_total") == 3
    assert "skipping a malformed line on the FIFO" in service.log()


def call(service: ServiceProcess, who: User, target: str, method: str, path: str) -> Any:
    done = who.run([SYSTEM_PYTHON, str(CLIENT), target, method, path, "-"])
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return answer["status"], json.loads(answer["body"])


def test_a_user_asks_for_its_fifo_over_http_and_uses_it(
    tmp_path: Path, shared: Path, user: User, processes: list[subprocess.Popen[bytes]]
) -> None:
    service = serve(tmp_path, shared)
    try:
        tcp = service.url.replace("http://", "tcp://")
        status, made = call(service, user, tcp, "POST", "/fifos")
        assert (status, made) == (201, {"path": str(fifo_of(shared, user))}), made
        unix = "unix://" + str(shared / "ts.sock")
        assert call(service, user, unix, "POST", "/fifos") == (200, made)
        stuck = user.spawn()
        processes.append(stuck)
        assert user.write(Path(made["path"]), request(stuck.pid, "asked")) == "ok"
        assert_sigkilled(stuck, 30)
    finally:
        service.stop()


@pytest.mark.torch
def test_torchs_own_client_follows_torchelastic_timer_file(
    service: ServiceProcess, shared: Path, processes: list[subprocess.Popen[bytes]]
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
    env = {**os.environ, "TORCHELASTIC_TIMER_FILE": str(fifo_of(shared, 0))}
    stuck = subprocess.Popen([sys.executable, "-c", code], env=env)
    processes.append(stuck)
    assert_sigkilled(stuck, 60)
    assert wait_for_state(service.url, stuck.pid, "killed")["source"] == "fifo"
