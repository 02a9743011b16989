"""A worker's user plants a FIFO or a link where the service reads the worker's dump:
the capture gives up at once with a clear reason, the worker is not signalled on the
strength of it, nothing else is read, and the kill still happens.

Each test runs twice: with workers of the tests' own user (no root needed) and of the
second user of tests/second_user.py, against a service (this process) running as root.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dump_paths import (
    REASONS,
    SECRET,
    WorkerUser,
    isolate_dump_dirs,
    other_user,
    plant,
    returns,
    same_user,
    spawn_worker,
)
from tests.second_user import SecondUser, shared_dir
from tests.waiting import wait_until
from tests.workers import assert_sigkilled
from timer_core import EventKind, Reaper, TimerEvent, identify
from timer_core.diagnosis.stack_capture import DumpPathError, StackCapturer
from timer_core.engine.arm_request import ArmRequest
from timer_core.engine.process import ProcessIdentity


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_dump_dirs(monkeypatch, tmp_path)


@pytest.fixture(params=["same-user", "second-user"])
def user(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WorkerUser]:
    if request.param == "same-user":
        yield same_user(tmp_path / "stacks")
        return
    other: SecondUser = request.getfixturevalue("second_user")  # skips without root
    with shared_dir(0o755) as reachable:
        yield other_user(other, reachable / "stacks")


@pytest.fixture
def worker(user: WorkerUser) -> Iterator[subprocess.Popen[bytes]]:
    process = spawn_worker(user)
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"  # root's, in a directory only root can enter
    path.write_text(SECRET + "\n")
    return path


def identity_of(process: subprocess.Popen[bytes]) -> ProcessIdentity:
    found = identify(process.pid)
    assert found is not None
    return found


def still_alive(process: subprocess.Popen[bytes]) -> bool:
    try:
        process.wait(0.5)
    except subprocess.TimeoutExpired:
        return True
    return False


@pytest.mark.parametrize("what", ["fifo", "link"])
def test_the_capture_gives_up_at_once_and_sends_no_dump_signal(
    user: WorkerUser, worker: subprocess.Popen[bytes], secret: Path, what: str
) -> None:
    capturer = StackCapturer(budget=5, use_py_spy=False, stack_dir=user.root)
    assert capturer.dump_dirs is not None
    directory = capturer.dump_dirs.ensure(user.uid, user.gid)
    assert directory is not None
    plant(user, what, directory / f"{worker.pid}.stack", secret)

    captured = returns(lambda: capturer.capture(identity_of(worker), signal.SIGUSR2))

    assert captured.method == "proc"
    assert any(REASONS[what] in note for note in captured.notes), captured.notes
    assert SECRET not in captured.text
    assert still_alive(worker)  # no SIGUSR2: it would have killed this worker


@pytest.mark.parametrize("what", ["fifo", "link"])
def test_the_service_makes_the_users_directory_and_the_kill_still_happens(
    user: WorkerUser, worker: subprocess.Popen[bytes], secret: Path, what: str
) -> None:
    capturer = StackCapturer(budget=2, use_py_spy=False, stack_dir=user.root)
    assert capturer.dump_dirs is not None
    engine = Reaper(capturer=capturer)
    events: list[TimerEvent] = []
    engine.add_listener(events.append)
    engine.add_listener(capturer.dump_dirs)
    engine.start()
    try:
        # Arming a timer with a dump signal makes the directory of the worker's user.
        engine.acquire(ArmRequest(worker.pid, "hung", time.time() + 60, dump_signal=signal.SIGUSR2))
        directory = user.root / str(user.uid)
        assert wait_until(directory.is_dir)
        made = os.lstat(directory)
        assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (user.uid, 0o700)
        assert stat.S_IMODE(os.lstat(user.root).st_mode) == 0o711
        assert os.lstat(user.root).st_uid == os.geteuid()

        plant(user, what, directory / f"{worker.pid}.stack", secret)
        engine.acquire(
            ArmRequest(worker.pid, "hung", time.time() + 0.2, dump_signal=signal.SIGUSR2)
        )
        assert_sigkilled(worker)
    finally:
        engine.stop()
    assert wait_until(lambda: any(event.kind == EventKind.KILLED for event in events))
    [killed] = [event for event in events if event.kind == EventKind.KILLED]
    assert killed.stack is not None and killed.stack.method == "proc"
    assert any(REASONS[what] in note for note in killed.stack.notes), killed.stack.notes
    assert SECRET not in killed.stack.text


def test_a_dump_file_that_never_answers_does_not_hold_up_the_kill(
    worker: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an open on a FUSE mount whose owner never answers: only the helper waits."""
    released = threading.Event()

    def never_answers(*args: object, **kwargs: object) -> tuple[int, Path]:
        released.wait()
        raise DumpPathError("released at the end of the test")

    monkeypatch.setattr("timer_core.diagnosis.stack_capture.open_dump_for_reading", never_answers)
    capturer = StackCapturer(budget=1, use_py_spy=False)
    try:
        captured = returns(lambda: capturer.capture(identity_of(worker), signal.SIGUSR2))
    finally:
        released.set()
    assert captured.method == "proc"
    assert any("did not answer within the budget" in note for note in captured.notes)
