"""TCP sockets asked of the kernel over NETLINK_SOCK_DIAG (what ``ss`` uses): the
listening ones, and the one established socket of a given pair of addresses.

Reading ``/proc/net/tcp`` makes the kernel walk every socket of the host: 4 to 10 ms
on this machine with a few hundred sockets, for each of ``tcp`` and ``tcp6``, on the
path of a kill. sock_diag walks only the listening table, or finds one socket by its
addresses, in well under a millisecond. It answers for this process's network
namespace only (the caller checks the worker shares it). Any failure raises
``OSError``; the caller falls back to the tables in ``proc_sockets``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time

from .proc_sockets import Address, TcpListener

__all__ = ["established_inode", "established_owner", "listening"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_ESTABLISHED = 1
_TCP_LISTEN = 10
_NO_COOKIE = 0xFFFFFFFF
# A dump of a host's listening sockets fits in a few of these; past it, give up.
_ANSWER_LIMIT = 4 * 1024 * 1024

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST = struct.Struct("=BBBBI")  # struct inet_diag_req_v2, up to its sockid
_SOCKID = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network byte order)
_SOCKID_REST = struct.Struct("=III")  # idiag_if, idiag_cookie[2]
_MESSAGE = struct.Struct("=BBBB")  # struct inet_diag_msg, up to its sockid
_MESSAGE_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_SOCKID_SIZE = _SOCKID.size + _SOCKID_REST.size
_ANY: tuple[Address, int] = (ipaddress.IPv4Address(0), 0)


def listening(family: socket.AddressFamily, deadline: float) -> list[TcpListener]:
    """Every listening TCP socket of ``family`` in this network namespace."""
    request = _request(family, 1 << _TCP_LISTEN, _ANY, _ANY, dump=True)
    return [
        TcpListener(inode, address, port, uid)
        for address, port, uid, inode in _ask(
            family, request, 1 << _TCP_LISTEN, deadline, dump=True
        )
    ]


def established_owner(
    local: tuple[Address, int], remote: tuple[Address, int], deadline: float
) -> tuple[int, int]:
    """(uid, inode) of the established socket whose own end is ``local`` and whose peer
    is ``remote``. ``FileNotFoundError`` when the kernel knows no such socket, which is
    also how a kernel without ``tcp_diag`` answers: a caller that must tell the two
    apart asks the tables."""
    family = socket.AF_INET if local[0].version == 4 else socket.AF_INET6
    request = _request(family, 1 << _TCP_ESTABLISHED, local, remote, dump=False)
    rows = _ask(family, request, 1 << _TCP_ESTABLISHED, deadline, dump=False)
    if not rows:
        raise FileNotFoundError(errno.ENOENT, "no such socket known to sock_diag")
    _, _, uid, inode = rows[0]
    return uid, inode


def established_inode(
    local: tuple[Address, int], remote: tuple[Address, int], deadline: float
) -> int | None:
    """The inode of the established socket whose own end is ``local`` and whose peer
    is ``remote``, or None if there is none."""
    try:
        return established_owner(local, remote, deadline)[1]
    except FileNotFoundError:
        return None


def _request(
    family: int, states: int, local: tuple[Address, int], remote: tuple[Address, int], *, dump: bool
) -> bytes:
    sockid = _SOCKID.pack(
        local[1], remote[1], local[0].packed.ljust(16, b"\0"), remote[0].packed.ljust(16, b"\0")
    ) + _SOCKID_REST.pack(0, _NO_COOKIE, _NO_COOKIE)
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, states) + sockid
    flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
    return _HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, flags, 1, 0) + body


def _ask(
    family: int, request: bytes, states: int, deadline: float, *, dump: bool
) -> list[tuple[Address, int, int, int]]:
    """Rows (own address, own port, uid, inode) of the kernel's answer in one of
    ``states`` (a mask): one datagram for a lookup, datagrams up to NLMSG_DONE for a
    dump."""
    rows: list[tuple[Address, int, int, int]] = []
    received = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(max(deadline - time.monotonic(), 0.001))
        diag.send(request)
        while True:
            answer = diag.recv(1 << 16)
            received += len(answer)
            if not answer or received > _ANSWER_LIMIT:
                raise OSError(errno.EMSGSIZE, "sock_diag answer cut or too long")
            if _parse(family, answer, states, rows) or not dump:
                return rows
            diag.settimeout(max(deadline - time.monotonic(), 0.001))


def _parse(
    family: int, answer: bytes, states: int, rows: list[tuple[Address, int, int, int]]
) -> bool:
    """Append the rows of one datagram in one of ``states``; True once the kernel said
    it is done. A lookup by addresses answers whatever state the socket is in (a closed
    connection's, in TIME_WAIT, among them), so the state is checked here."""
    offset = 0
    while offset + _HEADER.size <= len(answer):
        length, kind, _, _, _ = _HEADER.unpack_from(answer, offset)
        if length < _HEADER.size:
            raise OSError(errno.EPROTO, "sock_diag message shorter than its header")
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", answer, offset + _HEADER.size)
            raise OSError(-error, f"sock_diag: {errno.errorcode.get(-error, error)}")
        if kind == _SOCK_DIAG_BY_FAMILY:
            body = offset + _HEADER.size
            _, state, _, _ = _MESSAGE.unpack_from(answer, body)
            port, _, source, _ = _SOCKID.unpack_from(answer, body + _MESSAGE.size)
            tail = _MESSAGE_TAIL.unpack_from(answer, body + _MESSAGE.size + _SOCKID_SIZE)
            raw = source[:4] if family == socket.AF_INET else source
            if states & (1 << state):
                rows.append((ipaddress.ip_address(raw), port, tail[3], tail[4]))
        offset += (length + 3) & ~3
    return False
