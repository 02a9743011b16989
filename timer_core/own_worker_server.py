"""Torch's per-worker server (``_WorkerServer``) for this very process, on a Unix socket
only its user can reach: what ``configure(client, worker_server=True)`` and
``python -m timer_core.with_worker_server`` start.

The service finds the server among the worker's own listening sockets (contract 10),
so the path only has to be private, not agreed on. Each process gets a fresh
directory, mode 0700, made by descriptor below a base whose every level only root or
this user can change (``safe_dirs``): ``$XDG_RUNTIME_DIR`` when set, else the
temporary directory (``$TMPDIR``, ``/tmp``). Its name is random, so nobody can make
it first. The socket in it is set to mode 0600: the server answers anyone who can
connect with this process's stack and flight recorder.

The path must be fresh: torch's server, asked to listen on a path where a socket
already exists, never returns. The directory and socket are removed when the process
exits normally; a killed worker (the service's whole point) cannot, so each start also
removes this user's directories left by processes that are gone (the directory's name
carries its process's pid and start time). A forked child that asks again gets a
server of its own (the one it inherited answers for its parent, and the service would
refuse it for the child).
Torch is imported only when a server is started: it is an optional extra of this
package.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import secrets
import socket
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import log_names
from .diagnosis.worker_server_http import exchange
from .safe_dirs import open_directory

__all__ = ["SOCKET_NAME", "WorkerServerUnavailable", "start_worker_server"]

logger = logging.getLogger(log_names.API)

SOCKET_NAME = "worker.sock"
_PREFIX = "timer-ws-"  # short: a socket path holds 107 bytes
# Directories looked at per start, at most: a start must not cost a crowded /tmp's scan.
_MAX_SWEPT = 256
# How long a start waits for torch's server to listen (it takes milliseconds).
_LISTEN_WAIT = 10.0
# sun_path holds 108 bytes, the last a NUL.
_MAX_SOCKET_PATH = 107


class WorkerServerUnavailable(RuntimeError):
    """Torch's worker server cannot be started here; the message says what to do."""


@dataclass(frozen=True, slots=True)
class _Running:
    pid: int  # the process that started it (a forked child starts its own)
    directory: Path
    server: Any  # torch's _WorkerServer


_running: _Running | None = None
_lock = threading.Lock()


def start_worker_server() -> Path:
    """Start torch's worker server for this process on a private Unix socket, once per
    process, and return the socket's path. Raises ``WorkerServerUnavailable``, saying
    what to do, when torch is not importable or no private directory can be made."""
    global _running
    with _lock:
        if _running is not None and _running.pid == os.getpid():
            return _running.directory / SOCKET_NAME
        server_class = _server_class()
        directory, directory_fd = _private_directory()
        try:
            path = directory / SOCKET_NAME
            if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
                raise WorkerServerUnavailable(
                    f"the worker server's socket path {path} is longer than a Unix socket "
                    f"allows ({_MAX_SOCKET_PATH} bytes): set TMPDIR to a shorter directory"
                )
            server = server_class(str(path))
            # Made with the umask's mode; nobody else can reach it yet (the directory
            # is 0700), and nobody else can swap it within our directory.
            os.chmod(SOCKET_NAME, 0o600, dir_fd=directory_fd)
            _wait_listening(path)
        except BaseException:
            _remove(directory)
            raise
        finally:
            os.close(directory_fd)
        if _running is None:
            os.register_at_fork(after_in_child=_keep_in_child)
        _running = _Running(os.getpid(), directory, server)
        atexit.register(_stop, _running)
        logger.info("torch's worker server listens on %s (mode 0600)", path)
        return path


def _wait_listening(path: Path) -> None:
    """Return once the server answers ``ping`` (bounded). Torch's server serves on a
    thread of its own; shut down before that thread serves (a worker that exits at
    once), it never stops, and the process hangs at exit for good. A connection alone
    is not enough: the socket listens before the thread serves."""
    give_up_at = time.monotonic() + _LISTEN_WAIT
    while time.monotonic() < give_up_at:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                pass
            else:
                deadline = min(give_up_at, time.monotonic() + 1.0)
                if exchange(probe, "ping", 64, deadline, keep_alive=False) == b"pong":
                    return
        time.sleep(0.005)
    raise WorkerServerUnavailable(
        f"torch's worker server did not answer on {path} within {_LISTEN_WAIT:.0f} s; "
        "leave worker_server off (the service then takes the worker's stack with py-spy)"
    )


def _server_class() -> Any:
    try:
        from torch._C._distributed_c10d import _WorkerServer
    except ImportError as error:
        raise WorkerServerUnavailable(
            "worker_server=True starts torch's worker server, and torch (with "
            f"torch.distributed) is not importable here ({error}): install it in this "
            "environment (pip install 'timer-service[torch]'), or leave worker_server "
            "off; the service then takes the worker's stack with py-spy"
        ) from error
    return _WorkerServer


def _private_directory() -> tuple[Path, int]:
    """A fresh directory of this user's, mode 0700, and its descriptor."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    _remove_left_behind(base)
    directory = base / f"{_PREFIX}{_process_tag(os.getpid())}-{secrets.token_hex(4)}"
    what = "the worker server's directory"
    try:
        fd = open_directory(directory, what, make=(0o700, 0o700), follow_last=False)
    except OSError as error:
        raise WorkerServerUnavailable(
            f"cannot make a private directory for the worker server's socket: {error}; "
            "set TMPDIR (or XDG_RUNTIME_DIR) to a directory only you can write"
        ) from error
    return directory, fd


def _process_tag(pid: int) -> str | None:
    """``PID.STARTTIME`` (clock ticks since boot, from /proc/PID/stat): it names one
    process for good, where a pid alone is reused. None if the process is gone. Not
    psutil's create_time (``engine.process.identify``): that adds the boot time, which
    the kernel recomputes from the clock and may read a second apart, so two reads could
    disagree and a live worker's directory be taken for a dead one's."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as proc_stat:
            fields = proc_stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return f"{pid}.{int(fields[19])}"  # field 22 of stat(5), the 20th after the name


def _remove_left_behind(base: Path) -> None:
    """Remove this user's worker-server directories in ``base`` whose process is gone
    (killed: it could not remove its own). Only directories of this uid, by their exact
    name pattern, are touched, and nothing in them is followed; others' are left alone."""
    try:
        names = [name for name in os.listdir(base) if name.startswith(_PREFIX)]
    except OSError:
        return
    for name in names[:_MAX_SWEPT]:
        tag = name[len(_PREFIX) :].rpartition("-")[0]
        pid_text, _, _ = tag.partition(".")
        if not pid_text.isdigit() or _process_tag(int(pid_text)) == tag:
            continue  # not ours to judge, or its process still runs
        directory = base / name
        with contextlib.suppress(OSError):
            found = os.lstat(directory)
            if stat.S_ISDIR(found.st_mode) and found.st_uid == os.geteuid():
                _remove(directory)


def _keep_in_child() -> None:
    """In a forked child: its parent's server object is kept for good. The server's
    thread was not forked, and torch's destructor, run when the child exits normally,
    joins it and aborts the child ("terminate called after throwing an instance of
    'std::system_error': No such process")."""
    if _running is not None:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(_running.server))


def _stop(running: _Running) -> None:
    if running.pid != os.getpid():  # a forked child exiting: the server is its parent's
        return
    with contextlib.suppress(Exception):  # exiting anyway: a failed shutdown changes nothing
        running.server.shutdown()
    _remove(running.directory)


def _remove(directory: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(directory / SOCKET_NAME)
    with contextlib.suppress(OSError):
        os.rmdir(directory)
