"""Helpers for the tests of stack dump paths."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from tests.second_user import SecondUser, as_user
from tests.waiting import wait_until
from timer_core.diagnosis import dump_files

__all__ = [
    "REASONS",
    "SECRET",
    "WorkerUser",
    "isolate_dump_dirs",
    "other_user",
    "plant",
    "returns",
    "same_user",
    "spawn_worker",
]

SECRET = "root:the-password-hash"
# What the service says when it passes over each planted thing.
REASONS = {"fifo": "not a regular file", "link": "symbolic link: not followed"}

T = TypeVar("T")


def isolate_dump_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the dump directories a test makes count: not this host's /run or /tmp ones,
    nor an override in the environment."""
    monkeypatch.delenv(dump_files.STACK_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(dump_files, "SYSTEM_STACK_DIR", tmp_path / "no-service" / "stacks")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(exist_ok=True)


def returns(call: Callable[[], T], timeout: float = 30.0) -> T:
    """``call()``'s result (or exception), or a failure if it hangs, as an open of a
    FIFO would: the hang becomes a failed test, not a stuck run."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the call was still blocked after {timeout}s"
    if failure:
        raise failure[0]
    return outcome[0]


@dataclass
class WorkerUser:
    """Whose workers these are, and how to act as that user."""

    uid: int
    gid: int
    run: Callable[[list[str]], object]
    # A stack root that user can reach (the service makes the directories in it).
    root: Path


def same_user(root: Path) -> WorkerUser:
    """Workers of the tests' own user."""
    return WorkerUser(os.getuid(), os.getgid(), lambda argv: subprocess.run(argv, check=True), root)


def other_user(other: SecondUser, root: Path) -> WorkerUser:
    """Workers of the second user; ``root`` must be somewhere that user can reach."""
    return WorkerUser(other.uid, other.gid, lambda argv: other.run(argv, check=True), root)


def spawn_worker(user: WorkerUser) -> subprocess.Popen[bytes]:
    """A process of ``user`` that never registered a dump handler: SIGUSR2 kills it."""
    command = ["sleep", "300"]
    if user.uid != os.getuid():
        command = as_user(user.uid, user.gid, command)
    worker = subprocess.Popen(command)

    def running_as_user() -> bool:
        try:
            process = psutil.Process(worker.pid)
            return process.uids().real == user.uid and process.name() == "sleep"
        except psutil.Error:
            return False

    assert wait_until(running_as_user)
    return worker


def plant(user: WorkerUser, what: str, at: Path, secret: Path) -> None:
    """As the worker's user: a FIFO at ``at``, or a link to ``secret`` (root's)."""
    if what == "fifo":
        user.run(["mkfifo", str(at)])
    else:
        user.run(["ln", "-s", str(secret), str(at)])
