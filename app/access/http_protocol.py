"""uvicorn's HTTP protocol, plus who is at the other end of each connection, a bound
on the size of a request's head, a bound on the time to send a request, the connection
gate (``app.access.connection_gate``), and the bounds on response data left unread
(``app.access.unsent_data``).

ASGI gives an app the peer's address, not the peer's credentials, and a Unix socket
has no address at all. So the identity is read here, once, when the connection is made,
and handed to every request on that connection through the ASGI ``state`` dict
(``request.state.peer``). It dies with the connection: nothing outlives it that a
reused port or socket could inherit.

uvicorn times out idle keep-alive connections only once a first response is sent, and
not at all while a request trickles in: a connection that sends nothing, or a head a
byte at a time (slowloris), would hold its descriptor for ever. Here a connection must
deliver each whole request (head and body) within ``request_timeout`` seconds of
opening or of its previous response, or it is closed.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from app.access.callers import PEER_STATE_KEY, Caller, tcp_peer_uid, unix_peer_credentials
from app.access.connection_gate import ConnectionGate
from app.access.unsent_data import UnsentData

__all__ = ["MAX_HEAD_BYTES", "peer_of", "protocol_class"]

# The request line plus headers. h11 has this bound built in; httptools has none, so
# without one a client could grow the service's memory with one endless header.
MAX_HEAD_BYTES = 16 * 1024

# Sent to a connection the gate turns away, just before it is closed.
_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 36\r\n\r\ntoo many connections; retry shortly\n"
)


def _too_many_for_user(uid: int | None) -> bytes:
    who = f"uid {uid}" if uid is not None else "callers from other hosts together"
    body = (
        f"{who} already hold the most connections one user may "
        "(--max-connections-per-user); close or reuse one of them\n"
    ).encode()
    return (
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


def peer_of(transport: asyncio.BaseTransport) -> Caller:
    """The caller behind a freshly accepted connection, as the kernel knows it."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return Caller(None, "remote", "")
    if sock.family == socket.AF_UNIX:
        # uvloop hands out a pseudo-socket without getsockopt: ask a real one on a dup.
        with socket.socket(fileno=os.dup(sock.fileno())) as real:
            pid, unix_uid, _ = unix_peer_credentials(real)
        return Caller(unix_uid, "unix", f"pid {pid}")
    try:
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return Caller(None, "remote", "")
    uid = tcp_peer_uid((str(peer[0]), int(peer[1])), (str(local[0]), int(local[1])))
    channel = "tcp" if uid is not None else "remote"
    return Caller(uid, channel, f"{peer[0]}:{peer[1]}")


def protocol_class(
    kind: str = "auto",
    *,
    gate: ConnectionGate | None = None,
    request_timeout: float | None = None,
    unsent: UnsentData | None = None,
) -> type[asyncio.Protocol]:
    """uvicorn's ``httptools`` protocol (``h11`` when httptools is missing, or asked
    for), with the peer's identity added to every request's state; connections are
    admitted by ``gate``, must send each request within ``request_timeout``, and have
    their unread response data bounded by ``unsent``."""
    base: Any
    if kind in ("auto", "httptools"):
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
        except ImportError:
            if kind == "httptools":
                raise
            from uvicorn.protocols.http.h11_impl import H11Protocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class PeerIdentifyingProtocol(base):  # type: ignore[misc]
        app_state: dict[str, Any]
        _head_bytes = 0
        # httptools: a request is awaited or arriving (not yet whole).
        _receiving = True
        _request_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            peer = peer_of(transport)
            if gate is not None and gate.user_full(peer.uid):
                transport.write(_too_many_for_user(peer.uid))
                transport.close()
                return
            if gate is not None and not gate.admit(self, peer.uid):
                # Every connection is busy: say so, and release the descriptor at once.
                transport.write(_TOO_MANY_CONNECTIONS)
                transport.close()
                return
            # app_state is copied into each request's scope["state"]: a per-connection
            # copy carries the peer to every request of this connection, and only those.
            self.app_state = {**self.app_state, PEER_STATE_KEY: peer}
            self._start_request_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_request_timer()
            if gate is not None:
                gate.closed(self)
            if unsent is not None:
                unsent.drained(self)
            super().connection_lost(exc)

        # The transport's buffer crossed its high-water mark (pause) and, later, its
        # low-water mark (resume): uvicorn's flow control, and app.access.unsent_data's watch.
        def pause_writing(self) -> None:
            super().pause_writing()
            if unsent is not None:
                peer = self.app_state.get(PEER_STATE_KEY)
                unsent.paused(self, peer.uid if isinstance(peer, Caller) else None)

        def resume_writing(self) -> None:
            super().resume_writing()
            if unsent is not None:
                unsent.drained(self)

        def unsent_bytes(self) -> int:
            return int(self.transport.get_write_buffer_size())

        def abort(self, reason: str) -> None:
            # close() would wait for the client to read the buffer: abort() drops it.
            if gate is not None:
                gate.shed_by_client(reason)
            self.transport.abort()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                if gate is not None:
                    gate.active(self)
                self._start_request_timer()  # the next request has as long as the first

        # For the gate: a connection with no request being handled loses nothing if closed.
        def evictable(self) -> bool:
            return self.cycle is None or bool(self.cycle.response_complete)

        def evict(self) -> None:
            self.transport.close()

        def _start_request_timer(self) -> None:
            self._cancel_request_timer()
            if request_timeout is not None:
                self._request_timer = self.loop.call_later(request_timeout, self._request_timed_out)

        def _cancel_request_timer(self) -> None:
            if self._request_timer is not None:
                self._request_timer.cancel()
                self._request_timer = None

        def _request_timed_out(self) -> None:
            self._request_timer = None
            if self.transport.is_closing() or not self._request_incomplete():
                return  # a request is being handled, or none has started (keep-alive's job)
            if gate is not None:
                gate.timed_out()
            self.transport.close()

        def _request_incomplete(self) -> bool:
            conn = getattr(self, "conn", None)
            if conn is not None:  # h11: its own state says whether a request is whole
                import h11

                return conn.their_state in (h11.IDLE, h11.SEND_BODY)
            return self._receiving

        # httptools' callbacks (h11 never calls these): count the head as it arrives.
        def on_message_begin(self) -> None:
            self._head_bytes = 0
            self._receiving = True
            super().on_message_begin()

        def on_message_complete(self) -> None:
            self._receiving = False
            self._cancel_request_timer()
            super().on_message_complete()

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value))
            super().on_header(name, value)

        def _count_head(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_HEAD_BYTES:
                import httptools

                # Raised inside the parser, it ends in uvicorn's 400 and a closed socket.
                raise httptools.HttpParserError(f"request head over {MAX_HEAD_BYTES} bytes")

    return PeerIdentifyingProtocol
