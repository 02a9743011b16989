"""Who is asking: the caller's uid, learnt from the kernel, never from the request.

The service usually runs as root and can signal any process, so every write and every
stack read is checked against the caller's identity (contract 7):

- over a Unix socket (``--uds``), the peer's credentials (``SO_PEERCRED``);
- over loopback TCP, the owner of the peer's socket: the socket whose local address
  is the caller's end of this very connection, asked of the kernel by its addresses
  (``timer_core.diagnosis.tcp_diag``), or found in its socket table (``/proc/net/tcp`` and ``tcp6``)
  where that cannot be asked.

Both are read when the connection is made (see ``app.access.http_protocol``) and live exactly
as long as that connection, so a port reused by another process later cannot inherit
them. Nothing is cached across connections.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status

from app.settings import Settings
from timer_core.diagnosis import established_owner, kernel_address

__all__ = [
    "PEER_STATE_KEY",
    "WRONG_TOKEN_DETAIL",
    "Caller",
    "CallerDep",
    "authorize",
    "current_caller",
    "current_caller_from",
    "forbidden",
    "is_loopback",
    "is_privileged",
    "tcp_peer_uid",
    "token_matches",
    "unix_peer_credentials",
]

# Where app.access.http_protocol leaves the connection's caller in each request's state.
PEER_STATE_KEY = "peer"

_PROC_NET = Path("/proc/net")
_ESTABLISHED = "01"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Caller:
    """The party behind one request.

    ``uid`` is None when the kernel could not tell (a remote peer, or an ASGI server
    other than ours); such a caller may only do what the admin token allows.
    """

    uid: int | None
    channel: str  # "unix", "tcp" or "remote"
    address: str
    admin: bool = False

    def describe(self) -> str:
        who = "an unknown caller" if self.uid is None else f"uid {self.uid}"
        via = f"{self.channel} {self.address}".strip()
        return f"{who}{' with the admin token' if self.admin else ''} ({via})"


def current_caller_from(scope: Mapping[str, Any], token: str | None, authorization: str) -> Caller:
    """The caller of one request: the connection's peer, plus the admin token."""
    peer = (scope.get("state") or {}).get(PEER_STATE_KEY)
    if not isinstance(peer, Caller):
        # Not served through app.access.http_protocol (another ASGI server): the same kernel
        # lookup, per request. scope["client"] is the socket's peer unless a proxy
        # middleware rewrote it, and a rewritten one names no socket, so finds nobody.
        client, server = scope.get("client"), scope.get("server")
        uid = None
        if client and server and server[1] is not None:
            uid = tcp_peer_uid((str(client[0]), int(client[1])), (str(server[0]), int(server[1])))
        address = f"{client[0]}:{client[1]}" if client else ""
        peer = Caller(uid, "tcp" if uid is not None else "remote", address)
    admin = token_matches(token, authorization)
    return peer if peer.admin == admin else replace(peer, admin=admin)


async def current_caller(request: Request) -> Caller:
    # No sub-dependency (the settings are read off the app): each one costs FastAPI a
    # recursive solve on every request, and this runs on every write.
    settings: Settings = request.app.state.settings
    return current_caller_from(
        request.scope, settings.token, request.headers.get("authorization", "")
    )


# The 401 of a request without the admin token where it is needed (a write), or with a
# wrong one anywhere (app.access.request_limits.WrongToken): one wording for both.
WRONG_TOKEN_DETAIL = "missing or wrong token: send 'Authorization: Bearer <token>'"


def token_matches(expected: str | None, authorization: str) -> bool:
    """Whether an ``Authorization`` header carries the admin token (compared in constant
    time, so the token cannot be guessed byte by byte)."""
    if not expected:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), expected.encode())


CallerDep = Annotated[Caller, Depends(current_caller)]


def is_privileged(caller: Caller) -> bool:
    """Root, the service's own uid and the admin token may act on any process."""
    return caller.admin or (caller.uid is not None and caller.uid in (0, os.geteuid()))


def authorize(caller: Caller, owner_uid: int | None, action: str) -> str | None:
    """Why ``caller`` may not ``action`` (e.g. "read the stack of timer 7") something
    owned by ``owner_uid``, or None if it may. The rule of contract 7."""
    if is_privileged(caller):
        return None
    if caller.uid is None:
        return (
            f"the service cannot tell who you are ({caller.describe()}), so you may not "
            f"{action}: connect over loopback TCP or the Unix socket (--uds), or send the "
            "admin token"
        )
    if owner_uid is None:
        return (
            f"{caller.describe()} may not {action}: its owner is not known; only root, the "
            "service's user or the admin token may"
        )
    if owner_uid != caller.uid:
        return f"{caller.describe()} may not {action}: it belongs to uid {owner_uid}"
    return None


def forbidden(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=reason)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def unix_peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def tcp_peer_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The uid owning the socket at ``peer`` that is connected to our ``local`` end.

    Only loopback peers are looked up: for a remote peer the kernel here knows nothing
    about who is on the other machine. Returns None when no such socket is found.
    """
    if not is_loopback(peer[0]):
        return None
    peer_key = (_normalise(peer[0]), peer[1])
    local_key = (_normalise(local[0]), local[1])
    if peer_key[0].version == local_key[0].version:
        try:
            # The kernel answers at once; never hang a connection on it.
            return established_owner(peer_key, local_key, time.monotonic() + 1.0)[0]
        except OSError:
            pass  # no sock_diag here, or no such socket: the tables say for sure
    for table in ("tcp", "tcp6"):
        for own, remote, state, uid in _rows(_PROC_NET / table):
            # The caller's socket is the row whose *local* end is the caller's address
            # and whose remote end is ours: the same connection seen from its side.
            if state == _ESTABLISHED and own == peer_key and remote == local_key:
                return uid
    return None


def _rows(table: Path) -> Iterator[tuple[tuple[IPAddress, int], tuple[IPAddress, int], str, int]]:
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            yield _endpoint(fields[1]), _endpoint(fields[2]), fields[3], int(fields[7])
        except ValueError:
            continue


def _endpoint(text: str) -> tuple[IPAddress, int]:
    """An end of a row of the kernel's table, as the library reads it, normalised."""
    address, port = kernel_address(text)
    return _normalise_address(address), port


def _normalise(host: str) -> IPAddress:
    return _normalise_address(ipaddress.ip_address(host.split("%", 1)[0]))


def _normalise_address(address: IPAddress) -> IPAddress:
    # A v4 client of a dual-stack listener shows up as ::ffff:127.0.0.1 on one side.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
