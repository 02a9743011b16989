"""A hostile worker of the second user that lives in a mount namespace of its own
(``unshare -rm``), as in issue 20's attack on py-spy.

In its namespace it mounts a tmpfs over ``<dir>/lib``, copies libc there under a name
of its choosing, loads it and blocks inside it (``sleep``), so its ``/proc/PID/maps``
names a path that means one thing to it and another to the service: in the host's
namespace ``<dir>/lib`` is an ordinary directory of the user's, where it plants a link
(``plant``) to a root-only file or to a FIFO. With ``fifo_inside`` it also swaps, in
its own namespace, the library for a FIFO at the name the kernel then shows
(``<path> (deleted)``), so that py-spy, even in the worker's namespace, blocks on it:
a capture that hangs for as long as it is let.

Used by the tests of the capture's privileges and by bench/attacks.py. Needs root,
setpriv, Debian's python3 and unprivileged user namespaces (``usable``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.second_user import SYSTEM_PYTHON, SecondUser
from timer_core.diagnosis.stack_capture import StackCapturer

__all__ = ["LIBRARY", "HostileWorker", "namespaced_user", "plant", "start_hostile", "usable"]

LIBRARY = "libevil.so"
_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"

_SCRIPT = """
import ctypes, os, shutil, subprocess, sys
directory, name, fifo_inside = sys.argv[1], sys.argv[2], sys.argv[3] == "fifo"
subprocess.run(["mount", "-t", "tmpfs", "hostile", directory], check=True)
path = os.path.join(directory, name)
shutil.copy(sys.argv[4], path)
library = ctypes.CDLL(path)
if fifo_inside:
    os.unlink(path)
    os.mkfifo(path + " (deleted)")  # the name /proc/PID/maps now shows
print("ready", flush=True)
library.sleep(900)
"""


def usable(user: SecondUser) -> str:
    """Why the attack cannot be staged here ("" when it can)."""
    if not os.path.exists(_LIBC):
        return f"no {_LIBC} to load"
    probe = user.run(["unshare", "-rm", "true"])
    if probe.returncode != 0:
        return f"unprivileged user namespaces are off: {probe.stderr.strip()}"
    # py-spy runs as the worker's user: from a venv below a 0700 directory (a checkout
    # in mktemp -d, a venv in /root) that user cannot reach it, and the capture falls
    # back to /proc, as docs/security.md says.
    py_spy = StackCapturer().py_spy
    if py_spy is not None and user.run(["test", "-x", py_spy]).returncode != 0:
        return f"the second user cannot run {py_spy} (a directory above it is private)"
    return ""


@pytest.fixture
def namespaced_user(second_user: SecondUser) -> SecondUser:
    """The second user, where it may make namespaces of its own (else the test skips)."""
    why = usable(second_user)
    if why:
        pytest.skip(why)
    return second_user


class HostileWorker:
    def __init__(self, process: subprocess.Popen[bytes], library: Path) -> None:
        self.process = process
        self.pid = process.pid  # setpriv and unshare exec: the pid is python's
        self.library = library  # the path its maps name

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_hostile(
    user: SecondUser, directory: Path, *, name: str = LIBRARY, fifo_inside: bool = False
) -> HostileWorker:
    """Start the worker on ``directory`` (reachable by ``user``); returns once it is
    blocked inside its library."""
    script = directory / "hostile_worker.py"
    script.write_text(_SCRIPT)
    script.chmod(0o644)
    lib = directory / "lib"
    lib.mkdir(exist_ok=True)
    os.chown(lib, user.uid, user.gid)
    mode = "fifo" if fifo_inside else "plain"
    argv = ["unshare", "-rm", SYSTEM_PYTHON, str(script), str(lib), name, mode, _LIBC]
    process = user.popen(argv, stdout=subprocess.PIPE)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        process.wait()
        raise RuntimeError(f"the hostile worker did not start (exit {process.returncode})")
    return HostileWorker(process, lib / name)


def plant(user: SecondUser, worker: HostileWorker, target: Path) -> None:
    """In the host's namespace, a link at the worker's library path to ``target``."""
    user.run(["ln", "-s", str(target), str(worker.library)], check=True)
