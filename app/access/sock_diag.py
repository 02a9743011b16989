"""The owner of one TCP socket, asked of the kernel by its four addresses over
NETLINK_SOCK_DIAG (what ``ss`` uses), instead of reading the whole socket table.

``/proc/net/tcp`` and ``tcp6`` list every socket of the host: reading and parsing
them took milliseconds per connection on the event loop, and grows with the number
of sockets. The kernel finds one socket by its addresses in microseconds. Any
failure here (no netlink, no ``tcp_diag``, an answer not understood) raises
``OSError``, and the caller falls back to the tables.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

__all__ = ["tcp_socket_uid"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLMSG_ERROR = 2
_TCP_ESTABLISHED = 1
# No cookie: the socket is found by its addresses alone.
_NO_COOKIE = 0xFFFFFFFF

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST = struct.Struct("=BBBBI")  # struct inet_diag_req_v2, up to its sockid
_SOCKID_PORTS_ADDRESSES = struct.Struct("!HH16s16s")  # network byte order
_SOCKID_REST = struct.Struct("=III")  # idiag_if, idiag_cookie[2]
_MESSAGE = struct.Struct("=BBBB")  # struct inet_diag_msg, up to its sockid
_MESSAGE_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_SOCKID_SIZE = _SOCKID_PORTS_ADDRESSES.size + _SOCKID_REST.size

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def tcp_socket_uid(local: tuple[Address, int], remote: tuple[Address, int]) -> int | None:
    """The uid owning the established TCP socket whose own end is ``local`` and whose
    other end is ``remote`` (both of one family), or None if there is none."""
    family = socket.AF_INET if local[0].version == 4 else socket.AF_INET6
    request = _request(family, local, remote)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(1.0)  # the kernel answers at once; never hang a connection on it
        diag.send(request)
        answer = diag.recv(8192)
    return _uid_from(answer)


def _request(family: int, local: tuple[Address, int], remote: tuple[Address, int]) -> bytes:
    sockid = _SOCKID_PORTS_ADDRESSES.pack(
        local[1], remote[1], local[0].packed.ljust(16, b"\0"), remote[0].packed.ljust(16, b"\0")
    ) + _SOCKID_REST.pack(0, _NO_COOKIE, _NO_COOKIE)
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_ESTABLISHED) + sockid
    return _HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + body


def _uid_from(answer: bytes) -> int | None:
    if len(answer) < _HEADER.size:
        raise OSError(errno.EPROTO, "short sock_diag answer")
    _, kind, _, _, _ = _HEADER.unpack_from(answer)
    if kind == _NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", answer, _HEADER.size)
        if error == -errno.ENOENT:
            # No such socket; or no tcp_diag in this kernel, which answers the same:
            # the caller's fallback tells the two apart.
            raise OSError(errno.ENOENT, "no such socket known to sock_diag")
        raise OSError(-error, f"sock_diag: {errno.errorcode.get(-error, error)}")
    if kind != _SOCK_DIAG_BY_FAMILY:
        raise OSError(errno.EPROTO, f"unexpected sock_diag answer type {kind}")
    offset = _HEADER.size
    _, state, _, _ = _MESSAGE.unpack_from(answer, offset)
    _, _, _, uid, _ = _MESSAGE_TAIL.unpack_from(answer, offset + _MESSAGE.size + _SOCKID_SIZE)
    return int(uid) if state == _TCP_ESTABLISHED else None
