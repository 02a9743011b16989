"""A second, unprivileged user for the tests of who may do what (needs root): an
attacker, or a job that does not run as the service's user.

``ensure_user(name)`` creates a system user with no home and no login shell, or reuses
it; ``as_user(uid, gid, argv)`` is the command line that runs ``argv`` as that user,
with no supplementary groups. That user cannot run this project's venv (its interpreter
lives under /root, mode 0700): give it shell commands (``mkfifo``, ``ln -s``, ``mkdir``,
``sleep``) or Debian's /usr/bin/python3 with the standard library only. Nor can it reach
pytest's ``tmp_path`` (under a 0700 directory too): use ``shared_dir`` for paths it must
reach.

In a test::

    def test_something(second_user: SecondUser, shared_tmp: Path) -> None:
        second_user.run(["mkfifo", str(shared_tmp / "x")], check=True)
        worker = second_user.popen(["sleep", "300"])

Both fixtures are registered for every test (tests/conftest.py imports them), and
``second_user`` skips the test without root. A module whose service runs as root and
whose second user runs Debian's python3 sets ``pytestmark = SERVICE_AS_ROOT``.
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

__all__ = [
    "NAME",
    "SERVICE_AS_ROOT",
    "SYSTEM_PYTHON",
    "SecondUser",
    "as_user",
    "ensure_user",
    "needs_root",
    "readable_copy",
    "second_user",
    "shared_dir",
    "shared_tmp",
]

NAME = "timer-test-other"
# Readable by every user, unlike the venv's interpreter; standard library only.
SYSTEM_PYTHON = "/usr/bin/python3"
_WHY_ROOT = "needs root: makes a second user (useradd) and runs commands as it (setpriv)"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason=_WHY_ROOT)
SERVICE_AS_ROOT = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the service runs as root"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
    pytest.mark.skipif(
        not os.path.exists(SYSTEM_PYTHON), reason="needs Debian's python3 for the second user"
    ),
]


def ensure_user(name: str = NAME) -> tuple[int, int]:
    """``(uid, gid)`` of the system user ``name``, created if it does not exist."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        try:
            # Another test (or worker) may have created it meanwhile: that is fine.
            entry = pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(f"useradd {name} failed: {made.stderr.strip()}") from None
    return entry.pw_uid, entry.pw_gid


def as_user(uid: int, gid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``uid``/``gid`` through setpriv, without root's groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


@dataclass(frozen=True, slots=True)
class SecondUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> Self:
        """The system user ``name``, created if it does not exist."""
        return cls(name, *ensure_user(name))

    def argv(self, argv: Sequence[str]) -> list[str]:
        return as_user(self.uid, self.gid, argv)

    def run(self, argv: Sequence[str], *, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run to completion (30 s at most), capturing text output."""
        return subprocess.run(
            self.argv(argv), capture_output=True, text=True, timeout=30, check=check
        )

    def popen(self, argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` as this user; its pid is the command's own (setpriv execs it)."""
        return subprocess.Popen(self.argv(argv), **options)

    def sleeper(self) -> subprocess.Popen[bytes]:
        """A process of this user's own: ``sleep 600`` (setpriv execs it: the pid is sleep's)."""
        return self.popen(["sleep", "600"])

    def can_read(self, path: Path | str) -> bool:
        return self.run(["head", "-c", "1", str(path)]).returncode == 0


@contextmanager
def shared_dir(mode: int = 0o755) -> Iterator[Path]:
    """A fresh directory in /tmp with ``mode`` (0755: every user can reach it, only root
    writes; 0o1777: anyone may add entries, as in /tmp), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="timer-test-", dir="/tmp"))
    os.chmod(path, mode)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@functools.cache
def _readable_dir() -> Path:
    """One directory per test process that every user can read, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="timer-test-scripts-", dir="/tmp"))
    os.chmod(path, 0o755)
    atexit.register(shutil.rmtree, path, True)
    return path


def readable_copy(script: Path) -> Path:
    """A copy of ``script`` that every user can read (mode 0644, in a 0755 directory
    under /tmp), for the second user to run: it may not reach the checkout."""
    copy = _readable_dir() / script.name
    if not copy.exists():
        shutil.copyfile(script, copy)
        os.chmod(copy, 0o644)
    return copy


@pytest.fixture
def second_user() -> SecondUser:
    """The second user; skips the test without root."""
    if os.geteuid() != 0:
        pytest.skip(_WHY_ROOT)
    return SecondUser.named(NAME)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory (mode 0755) that the second user can reach and not write."""
    with shared_dir() as path:
        yield path
