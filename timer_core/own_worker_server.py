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
exits normally. A forked child that asks again gets a server of its own (the one it
inherited answers for its parent, and the service would refuse it for the child).
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
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import log_names
from .safe_dirs import open_directory

__all__ = ["SOCKET_NAME", "WorkerServerUnavailable", "start_worker_server"]

logger = logging.getLogger(log_names.API)

SOCKET_NAME = "worker.sock"
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
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    directory = Path(base) / f"timer-worker-server-{secrets.token_hex(8)}"
    what = "the worker server's directory"
    try:
        fd = open_directory(directory, what, make=(0o700, 0o700), follow_last=False)
    except OSError as error:
        raise WorkerServerUnavailable(
            f"cannot make a private directory for the worker server's socket: {error}; "
            "set TMPDIR (or XDG_RUNTIME_DIR) to a directory only you can write"
        ) from error
    return directory, fd


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
