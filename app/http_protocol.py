"""uvicorn's HTTP protocol, plus who is at the other end of each connection, and a
bound on the size of a request's head.

ASGI gives an app the peer's address, not the peer's credentials, and a Unix socket
has no address at all. So the identity is read here, once, when the connection is made,
and handed to every request on that connection through the ASGI ``state`` dict
(``request.state.peer``). It dies with the connection: nothing outlives it that a
reused port or socket could inherit.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from .callers import PEER_STATE_KEY, Caller, tcp_peer_uid, unix_peer_credentials

__all__ = ["MAX_HEAD_BYTES", "peer_of", "protocol_class"]

# The request line plus headers. h11 has this bound built in; httptools has none, so
# without one a client could grow the service's memory with one endless header.
MAX_HEAD_BYTES = 16 * 1024


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


def protocol_class(kind: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's ``httptools`` protocol (``h11`` when httptools is missing, or asked
    for), with the peer's identity added to every request's state."""
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

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            # app_state is copied into each request's scope["state"]: a per-connection
            # copy carries the peer to every request of this connection, and only those.
            self.app_state = {**self.app_state, PEER_STATE_KEY: peer_of(transport)}

        # httptools' callbacks (h11 never calls these): count the head as it arrives.
        def on_message_begin(self) -> None:
            self._head_bytes = 0
            super().on_message_begin()

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
