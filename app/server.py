"""Runs the app under uvicorn on the service's sockets: loopback TCP, and optionally a
Unix socket (``--uds``), both served by one uvicorn server and one app.

Every connection goes through ``app.access.http_protocol``, which learns who the caller is
from the kernel. A proxy's X-Forwarded-* headers are honoured only from the addresses
in ``--forwarded-allow-ips`` (none by default): they change the URLs the app builds,
never who the caller is.

Before anything opens a descriptor, the soft open file limit is raised to the hard one:
each worker holds a pidfd, each connection a socket, and a kill needs a few more. The
connection gate (``app.access.connection_gate``) keeps the kill path's share free.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import stat
from collections.abc import Iterator
from typing import Protocol

import uvicorn

from app import log_names
from app.access.connection_gate import ConnectionGate
from app.access.http_protocol import MAX_HEAD_BYTES, protocol_class
from app.access.unsent_data import UnsentData
from app.main import create_app
from app.settings import Settings
from timer_core.engine.descriptors import kill_path_reserve, raise_descriptor_limit
from timer_core.safe_dirs import UnsafeDirectoryError, open_directory

__all__ = ["bind_unix_socket", "serve"]

logger = logging.getLogger(log_names.SERVER)


class Served(Protocol):
    """What the server asks of the app's service (``app.service.Service``): its claim
    on the database, and the limits every connection passes."""

    @property
    def connections(self) -> ConnectionGate: ...

    @property
    def unsent(self) -> UnsentData: ...

    def claim(self) -> None: ...


# Idle keep-alive connections are closed after this long (uvicorn's default is 5 s).
_KEEP_ALIVE_SECONDS = 5


def bind_unix_socket(path: str) -> socket.socket:
    """A listening Unix socket at ``path`` that every local user may connect to: each
    is told apart by its kernel credentials, not by file permissions. A stale socket
    from an earlier run is replaced; any other file there is left alone, with an error.

    By descriptor: the directory is reached through ``timer_core.safe_dirs`` (refused if
    another user could change it), and the old socket is removed and the new one bound
    relative to it (bound through ``/proc/self/fd``, which names that very directory)."""
    try:
        directory = open_directory(
            os.path.dirname(os.path.abspath(path)), "--uds's directory", sticky_last=True
        )
    except UnsafeDirectoryError as error:
        raise SystemExit(f"timer-service: {error}") from None
    name = os.path.basename(path)
    try:
        with contextlib.suppress(FileNotFoundError):
            existing = os.stat(name, dir_fd=directory, follow_symlinks=False)
            if not stat.S_ISSOCK(existing.st_mode):
                raise SystemExit(
                    f"--uds {path} exists and is not a socket; remove it or pick another path"
                )
            os.unlink(name, dir_fd=directory)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        through_directory = f"/proc/self/fd/{directory}/{name}"
        old_umask = os.umask(0o111)  # rw for everyone from the start: no window of 0755
        try:
            # sun_path holds 107 bytes: a longer name is bound by its path (the
            # directory was checked above, so only root or we could swap it).
            sock.bind(through_directory if len(through_directory) < 108 else path)
        finally:
            os.umask(old_umask)
    finally:
        os.close(directory)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _sockets(config: uvicorn.Config, settings: Settings) -> Iterator[list[socket.socket]]:
    sockets = [config.bind_socket()]
    if settings.uds:
        sockets.append(bind_unix_socket(settings.uds))
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
        if settings.uds:
            with contextlib.suppress(OSError):
                os.unlink(settings.uds)


def _raise_descriptor_limit() -> None:
    before, limit = raise_descriptor_limit()
    logger.info(
        "open file limit %d%s; %d descriptors kept for kills",
        limit,
        f" (raised from {before})" if limit != before else "",
        kill_path_reserve(limit),
    )


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # The app is started: modules, routes, the database engine and every re-armed
        # timer are made, and most live as long as the process. Frozen, they are left
        # out of the collector's full passes, which under load otherwise came every
        # second or so and held the GIL ~80 ms each, stalling every request in flight
        # (docs/benchmarks.md).
        gc.collect()
        gc.freeze()


def serve(settings: Settings) -> None:
    _raise_descriptor_limit()
    app = create_app(settings)
    service: Served = app.state.service
    try:
        # Here, not in the app's start: a refusal there (a live service holds the
        # database, a linked database file) comes out as uvicorn's traceback.
        service.claim()
    except RuntimeError as error:  # ServiceLockError, and private_files' refusals
        raise SystemExit(f"timer-service: {error}") from None
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_class(
            gate=service.connections,
            request_timeout=settings.request_timeout,
            unsent=service.unsent,
        ),
        # One format for every line: uvicorn gets no logging config of its own, and
        # its loggers hand their records to ours (app.ops.logs).
        log_config=None,
        log_level=None,
        access_log=settings.access_log,
        root_path=settings.root_path,
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=_KEEP_ALIVE_SECONDS,
    )
    with _sockets(config, settings) as sockets:
        _Server(config).run(sockets=sockets)
