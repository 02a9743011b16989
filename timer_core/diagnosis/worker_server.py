"""Torch's per-worker server (``torch._C._distributed_c10d._WorkerServer``), found from
the worker's own listening sockets and asked for its Python stack and flight recorder.

A worker starts it on a Unix socket (``torch.distributed.elastic.control_plane.
worker_main()`` with ``TORCH_WORKER_SERVER_SOCKET``) or on TCP
(``torch.distributed.debug.start_debug_server()``, bound to ``::``). Nothing is agreed
in advance: the server is one of the sockets the worker listens on (``proc_sockets``)
that answers ``ping`` with ``pong``.

An answer is believed to be the worker's only when the worker itself answered it:

- Unix: the peer credentials of the connection (``SO_PEERCRED``, fixed by the kernel
  when the server called ``listen()``) name that very pid. The path shown for the
  worker's socket is the worker's to replace (a symlink to another user's server, a
  socket inherited from a parent that still serves it): the kernel's answer is what
  counts, not the path.
- TCP, which has no peer credentials: the listening socket is among the worker's own
  descriptors and was made by one of its uids, and the connection, once answered, was
  accepted by the worker (the server's end of it is among the worker's descriptors).
  The worker must share the service's network namespace, or its loopback is not ours.

Every step has the caller's deadline and a byte cap (``worker_server_http``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from . import tcp_diag
from .path_connect import LookupAbandoned, connect_within
from .proc_sockets import (
    TcpListener,
    UnixListener,
    process_uids,
    same_network_namespace,
    socket_inodes,
    tcp_inode,
    tcp_listeners,
    unix_listeners,
)
from .worker_server_http import Refusal, Why, exchange

__all__ = ["Endpoint", "connect_checked", "fetch", "find_worker_server"]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_PING_BYTES = 64
# A worker listens on a few sockets; a hostile one on thousands, each a thread to ask.
MAX_CANDIDATES = 16


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where ``pid``'s worker server listens: a Unix socket name (a path, or an
    abstract name starting with a NUL) or a loopback TCP address."""

    pid: int
    listener: UnixListener | TcpListener

    @property
    def address(self) -> bytes | tuple[str, int]:
        if isinstance(self.listener, UnixListener):
            return self.listener.name
        bound = self.listener.address
        # A wildcard is reached on the loopback of its own family (a v6-only "::"
        # would not answer on 127.0.0.1, and a 127.0.0.1 there may be someone else's).
        host = ("::1" if bound.version == 6 else "127.0.0.1") if bound.is_unspecified else bound
        return (str(host), self.listener.port)


def find_worker_server(pid: int, deadline: float) -> Endpoint | Refusal:
    """The socket ``pid`` itself listens on that answers torch's ``ping``, or why none.
    Its Unix sockets are tried first: they need no look at the TCP tables."""
    refusals: list[Refusal] = []
    try:
        inodes = socket_inodes(pid, deadline)
        local = same_network_namespace(pid)
        unix = [u for u in unix_listeners(pid, inodes) if local or u.name[:1] != b"\0"]
        endpoint = _first_pong(pid, unix, deadline, refusals)
        if endpoint is None and local and time.monotonic() < deadline:
            endpoint = _first_pong(pid, _tcp_candidates(pid, inodes, deadline), deadline, refusals)
    except OSError as error:
        return Refusal(Why.UNREADABLE, f"pid {pid}: {error}")
    if endpoint is not None:
        return endpoint
    if not refusals:
        return Refusal(Why.NO_SERVER, f"pid {pid} listens on no Unix or loopback TCP socket")
    # The most telling refusal first: another process's server says more than a timeout.
    order = [Why.NOT_ITS_OWN, Why.TIMEOUT, Why.TOO_LARGE, Why.GARBAGE]
    refusals.sort(key=lambda r: order.index(r.why) if r.why in order else len(order))
    return refusals[0]


def _first_pong(
    pid: int,
    listeners: Sequence[UnixListener | TcpListener],
    deadline: float,
    refusals: list[Refusal],
) -> Endpoint | None:
    """The first of ``listeners`` to answer ``pong``. They are asked at once: a worker
    also listens for other things (a TCPStore, gloo's pairs) that never answer HTTP,
    and each of those would otherwise cost the whole deadline."""
    if len(listeners) > MAX_CANDIDATES:
        refusals.append(Refusal(Why.NO_SERVER, f"{len(listeners)} sockets, only the first tried"))
    endpoints = [Endpoint(pid, listener) for listener in listeners[:MAX_CANDIDATES]]
    if not endpoints:
        return None
    pool = ThreadPoolExecutor(len(endpoints), thread_name_prefix="worker-server-ping")
    opened: list[socket.socket] = []
    try:
        pending = {
            pool.submit(fetch, e, "ping", _PING_BYTES, deadline, opened=opened): e
            for e in endpoints
        }
        while pending:
            done, _ = wait(
                pending, timeout=max(deadline - time.monotonic(), 0), return_when=FIRST_COMPLETED
            )
            if not done:
                refusals.append(Refusal(Why.TIMEOUT, "ping: no answer within the deadline"))
                return None
            for future in done:
                endpoint, answer = pending.pop(future), future.result()
                if answer == b"pong":
                    return endpoint
                why = answer if isinstance(answer, Refusal) else Refusal(Why.GARBAGE, "ping")
                refusals.append(why)
        return None
    finally:
        # The others are woken at once (a listener that never answers HTTP would keep
        # its connection and its thread until the deadline); nobody waits for them.
        for connection in list(opened):
            with contextlib.suppress(OSError):  # already closed by its own thread
                connection.shutdown(socket.SHUT_RDWR)
        pool.shutdown(wait=False)


def _tcp_candidates(pid: int, inodes: set[int], deadline: float) -> list[TcpListener]:
    """The worker's own listening TCP sockets on loopback or a wildcard, made by it."""
    try:
        listeners = tcp_diag.listening(socket.AF_INET, deadline)
        listeners += tcp_diag.listening(socket.AF_INET6, deadline)
    except OSError:
        listeners = tcp_listeners(pid)  # no sock_diag here: the slower tables
    uids = process_uids(pid)
    return [
        t
        for t in listeners
        if t.inode in inodes
        and t.uid in uids
        and (t.address.is_loopback or t.address.is_unspecified)
    ]


def fetch(
    endpoint: Endpoint,
    handler: str,
    max_bytes: int,
    deadline: float,
    *,
    opened: list[socket.socket] | None = None,
) -> bytes | Refusal:
    """The body of ``handler``'s answer from ``endpoint``'s worker itself, at most
    ``max_bytes``, before ``deadline`` (``time.monotonic()``), or why not. The
    connection is added to ``opened``, for a caller that may cut it short."""
    connection = connect_checked(endpoint, deadline)
    if isinstance(connection, Refusal):
        return connection
    if opened is not None:
        opened.append(connection)
    with connection:
        is_tcp = isinstance(endpoint.listener, TcpListener)
        answer = exchange(connection, handler, max_bytes, deadline, keep_alive=is_tcp)
        if is_tcp and not isinstance(answer, Refusal):
            accepted_by = _tcp_acceptor_check(endpoint, connection, deadline)
            if accepted_by is not None:
                return accepted_by
        return answer


def connect_checked(endpoint: Endpoint, deadline: float) -> socket.socket | Refusal:
    """A connection to ``endpoint``; on a Unix socket, refused unless its peer is the
    worker itself."""
    address = endpoint.address
    family = socket.AF_UNIX if isinstance(address, bytes) else _family(address[0])
    connection = socket.socket(family, socket.SOCK_STREAM)
    try:
        connect_within(connection, address, deadline)
        if family == socket.AF_UNIX:
            credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            peer_pid, peer_uid, _ = _UCRED.unpack(credentials)
            if peer_pid != endpoint.pid:
                connection.close()
                return Refusal(
                    Why.NOT_ITS_OWN,
                    f"{address!r} is served by pid {peer_pid} (uid {peer_uid}), not {endpoint.pid}",
                )
    except LookupAbandoned as stuck:
        return Refusal(Why.TIMEOUT, str(stuck))  # the connection is its thread's now
    except TimeoutError:
        connection.close()
        return Refusal(Why.TIMEOUT, f"connecting to {address!r}")
    except OSError as error:
        connection.close()
        return Refusal(Why.UNREACHABLE, f"connecting to {address!r}: {error}")
    return connection


def _tcp_acceptor_check(
    endpoint: Endpoint, connection: socket.socket, deadline: float
) -> Refusal | None:
    """None if the worker accepted ``connection`` (its end is among its descriptors):
    another process holding the same listening socket may have answered instead."""
    server = connection.getpeername()
    own = connection.getsockname()
    try:
        try:
            server_end = tcp_diag.established_inode(
                (ipaddress.ip_address(server[0]), server[1]),
                (ipaddress.ip_address(own[0]), own[1]),
                deadline,
            )
        except OSError:
            server_end = tcp_inode(endpoint.pid, server[1], own[1])
        if server_end is not None and server_end in socket_inodes(endpoint.pid, deadline):
            return None
    except OSError as error:
        return Refusal(Why.UNREADABLE, f"pid {endpoint.pid}: {error}")
    return Refusal(Why.NOT_ITS_OWN, f"port {server[1]}: accepted by another process")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
