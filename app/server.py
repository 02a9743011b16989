"""Runs the app under uvicorn on the service's sockets: loopback TCP, and optionally a
Unix socket (``--uds``), both served by one uvicorn server and one app.

Every connection goes through ``app.access.http_protocol``, which learns who the caller is
from the kernel. A proxy's X-Forwarded-* headers are honoured only from the addresses
in ``--forwarded-allow-ips`` (none by default): they change the URLs the app builds,
never who the caller is.

Before anything opens a descriptor, the soft open file limit is raised to the hard one:
each worker holds a pidfd, each connection a socket, and a kill needs a few more. The
connection gate (``app.access.connection_gate``) keeps the kill path's share free.

The service starts before the HTTP server runs, not in the app's lifespan: what refuses
a start (the port taken, the database, a path) is raised here as itself, for the CLI to
tell in one line, rather than logged by uvicorn as a traceback. SIGINT and SIGTERM stop
it, while it starts too, and it ends with "shutdown complete".
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Protocol

import uvicorn

from app import log_names
from app.access.connection_gate import ConnectionGate
from app.access.http_protocol import MAX_HEAD_BYTES, protocol_class
from app.access.unsent_data import UnsentData
from app.db.database_status import masked_url
from app.main import create_app
from app.settings import Settings
from timer_core.engine.descriptors import kill_path_reserve, raise_descriptor_limit
from timer_core.safe_dirs import UnsafeDirectoryError, open_directory

__all__ = ["PortError", "bind_tcp_socket", "bind_unix_socket", "listen_tcp_socket", "serve"]

logger = logging.getLogger(log_names.SERVER)


# What ``Service.claim``/``start`` take around their waits, as the server sees it (it
# knows the service only through ``Served``: app.service is the composition root's).
Waits = Callable[[], contextlib.AbstractContextManager[None]]


class Served(Protocol):
    """What the server asks of the app's service (``app.service.Service``): its claim
    on the database, and the limits every connection passes."""

    @property
    def connections(self) -> ConnectionGate: ...

    @property
    def unsent(self) -> UnsentData: ...

    def claim(self, interruptible: Waits = ...) -> None: ...

    def start(self, interruptible: Waits = ...) -> None: ...

    def stop(self) -> None: ...


# Idle keep-alive connections are closed after this long (uvicorn's default is 5 s).
_KEEP_ALIVE_SECONDS = 5


class PortError(RuntimeError):
    """The service cannot listen on its host and port: the message names them and says
    what to do."""


def _port_problem(host: str, port: int, error: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(error, socket.gaierror):
        return (
            f"--host {host!r} is neither an address nor a name this host resolves "
            f"({error.strerror}); pass an address of this host, such as 127.0.0.1"
        )
    if error.errno == errno.EADDRINUSE:
        return (
            f"{where} is already in use: another timer-service or another program listens "
            f"there (ss -ltnp 'sport = :{port}' shows which); stop it, or pass another --port"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: {host} is not an address of this host; pass --host "
            "with one of its addresses (ip -brief address shows them), or 127.0.0.1"
        )
    if error.errno == errno.EACCES and 0 < port < 1024:
        return (
            f"cannot listen on {where}: a port below 1024 needs root or CAP_NET_BIND_SERVICE; "
            "pass --port 1024 or above"
        )
    return f"cannot listen on {where}: {error.strerror or error}; check --host and --port"


def bind_tcp_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` for uvicorn to listen on (as uvicorn's own
    ``Config.bind_socket``, whose failure is a bare "[Errno 98] Address already in use"
    naming neither); ``PortError`` says which and what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PortError(_port_problem(host, port, error)) from None
    sock.set_inheritable(True)
    return sock


def listen_tcp_socket(sock: socket.socket, host: str, backlog: int) -> None:
    """Start listening on ``sock`` (from ``bind_tcp_socket``): ``PortError`` if another
    socket took the port meanwhile. With SO_REUSEADDR, two sockets that do not listen yet
    may bind one port (two services starting at once); only the first to listen keeps it.
    Left to uvicorn, uvloop's ``create_server(sock=...)`` does not report the failed
    listen: the service ran on, started, with no TCP port at all."""
    try:
        sock.listen(backlog)
    except OSError as error:
        raise PortError(_port_problem(host, sock.getsockname()[1], error)) from None


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
        bound = False
        try:
            old_umask = os.umask(0o111)  # rw for everyone from the start: no window of 0755
            try:
                # sun_path holds 107 bytes: a longer name is bound by its path (the
                # directory was checked above, so only root or we could swap it).
                sock.bind(through_directory if len(through_directory) < 108 else path)
                bound = True
            finally:
                os.umask(old_umask)
            sock.listen(2048)
        except BaseException:
            sock.close()
            if bound:  # no socket file of ours left behind
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=directory)
            raise
    finally:
        os.close(directory)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _sockets(settings: Settings) -> Iterator[list[socket.socket]]:
    sockets = [bind_tcp_socket(settings.host, settings.port)]
    try:
        if settings.uds:
            sockets.append(bind_unix_socket(settings.uds))
    except BaseException:
        sockets[0].close()
        raise
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


class _StopSignals:
    """SIGINT and SIGTERM, the operator's ways to stop the service.

    While the start waits (``interruptible``: for its database with --db-wait, while it
    migrates) the first one interrupts it, as Ctrl-C does a script (KeyboardInterrupt).
    Anywhere else it is only noted, and the start stops once it reaches a safe point:
    raised there, it could land between a lock's ``__enter__`` and its ``with`` body,
    halfway through re-arming, or after the Unix socket was bound (its file left
    behind). While uvicorn runs, its handlers take them (``_Server.capture_signals``)
    and shut it down gracefully. Once installed they stay: ``serve`` is the process's
    last act, and a signal during the last log lines or the interpreter's exit is
    noted, not a traceback (SIGINT) or a death by signal (SIGTERM)."""

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.interrupting = False
        self.received: int | None = None
        # Those the parent set ignored (nohup, a script's `cmd &`): they stay so.
        self.ignored: frozenset[int] = frozenset()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self.interrupting:
            # Once: a second Ctrl-C must not cut short the stop the first one began
            # (the recorder's last events unwritten, threads left running).
            self.interrupting = False
            raise KeyboardInterrupt

    def install(self) -> None:
        """Take SIGINT and SIGTERM for the rest of the process's life, but for those
        ignored."""
        self.ignored = frozenset(
            signum for signum in self.HANDLED if signal.getsignal(signum) is signal.SIG_IGN
        )
        for signum in self.HANDLED:
            if signum not in self.ignored:
                signal.signal(signum, self)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A wait the first signal cuts short; one noted before it began ends it at once."""
        if self.received is not None:
            raise KeyboardInterrupt
        self.interrupting = True
        try:
            yield
        finally:
            self.interrupting = False

    def stop_if_received(self) -> None:
        """At a safe point of the start: stop it if a signal was noted meanwhile."""
        if self.received is not None:
            raise KeyboardInterrupt

    def said(self) -> str:
        return f" ({signal.Signals(self.received).name})" if self.received else ""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, signals: _StopSignals) -> None:
        super().__init__(config)
        self._signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, but a signal the parent set ignored stays ignored (uvicorn's own
        takes SIGINT and SIGTERM whatever they were), and what it took is noted rather
        than raised again once it gave them back."""
        taken = [signum for signum in _StopSignals.HANDLED if signum not in self._signals.ignored]
        previous = {signum: signal.signal(signum, self._take) for signum in taken}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _take(self, signum: int, frame: FrameType | None) -> None:
        self._signals.received = signum
        self.handle_exit(signum, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # A signal that came after the service started but before uvicorn took the
        # signals (noted by _StopSignals) still stops it.
        if self._signals.received is not None:
            self.should_exit = True
        # The app is started: modules, routes, the database engine and every re-armed
        # timer are made, and most live as long as the process. Frozen, they are left
        # out of the collector's full passes, which under load otherwise came every
        # second or so and held the GIL ~80 ms each, stalling every request in flight
        # (docs/benchmarks.md).
        gc.collect()
        gc.freeze()


def serve(settings: Settings) -> None:
    """Run the service until SIGINT or SIGTERM, then stop it: "shutdown complete". What
    refuses the start (``PortError``, the database's, the paths' errors, each one line
    that says what to do) is raised after whatever had started has stopped. From the
    main thread only, as the process's last act: it takes the signals for good."""
    signals = _StopSignals()
    signals.install()
    # KeyboardInterrupt: stopped while it started; what had started has stopped.
    with contextlib.suppress(KeyboardInterrupt):
        _serve(settings, signals)
    logger.info("shutdown complete%s", signals.said())


def _serve(settings: Settings, signals: _StopSignals) -> None:
    _raise_descriptor_limit()
    app = create_app(settings)
    service: Served = app.state.service
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
    try:
        # Claimed first: a live service holding the database is the likelier reason
        # its port is taken, and the claim's refusal names that service.
        service.claim(signals.interruptible)
        signals.stop_if_received()
        with _sockets(settings) as sockets:
            logger.info(
                "timer-service on %s%s (db %s)",
                _url(settings.host, sockets[0].getsockname()[1]),
                f" and unix:{settings.uds}" if settings.uds else "",
                masked_url(settings.db_url),
            )
            service.start(signals.interruptible)
            signals.stop_if_received()
            # Here, not at the bind: until the service has started, a connection is
            # refused (as before uvicorn served), not left waiting in the backlog.
            listen_tcp_socket(sockets[0], settings.host, config.backlog)
            _Server(config, signals).run(sockets=sockets)
    finally:
        service.stop()
