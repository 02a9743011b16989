"""The sockets a process listens on, read from ``/proc``: its own descriptors
(``/proc/PID/fd``, ``socket:[inode]``) matched to the listening sockets of its network
namespace (``/proc/PID/net/unix``, ``tcp``, ``tcp6``).

The worker is hostile and the reader runs as root: every file here is read with a
byte cap and the scan of the descriptors stops at a deadline, so a worker with a
million descriptors or a host with a huge socket table costs a bounded time. What is
read says only what the worker holds, not who answers on it: ``worker_server`` checks
that. A path shown in ``/proc/net/unix`` is the worker's to choose (it may hold spaces,
newlines, or be a symlink by the time it is used); it is never opened here.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from dataclasses import dataclass

__all__ = [
    "ProcTooLarge",
    "TcpListener",
    "UnixListener",
    "kernel_address",
    "process_uids",
    "read_bounded",
    "same_network_namespace",
    "socket_inodes",
    "tcp_inode",
    "tcp_listeners",
    "unix_listeners",
]

# A host's socket tables: ~150 bytes a socket, so some 100,000 sockets.
TABLE_LIMIT = 16 * 1024 * 1024
# Flags of /proc/net/unix: __SO_ACCEPTCON, set once the socket called listen().
_ACCEPTING = 0x10000
_TCP_LISTEN = "0A"
_TCP_ESTABLISHED = "01"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ProcTooLarge(OSError):
    """A /proc file or directory was larger than its cap, or took past the deadline."""


@dataclass(frozen=True, slots=True)
class UnixListener:
    inode: int
    name: bytes  # a path, or an abstract name starting with b"\0"


@dataclass(frozen=True, slots=True)
class TcpListener:
    inode: int
    address: Address  # the address it is bound to (a wildcard, or a loopback address)
    port: int
    uid: int  # who made the socket


def read_bounded(path: str, limit: int = TABLE_LIMIT) -> bytes:
    """The whole of ``path``, or ``ProcTooLarge`` past ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 16):
            size += len(chunk)
            if size > limit:
                raise ProcTooLarge(f"{path} is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def socket_inodes(pid: int, deadline: float) -> set[int]:
    """The inodes of the sockets ``pid`` holds. ``ProcTooLarge`` past the deadline;
    ``OSError`` if the process is gone or not readable."""
    inodes: set[int] = set()
    with os.scandir(f"/proc/{pid}/fd") as entries:
        for count, entry in enumerate(entries):
            if count % 256 == 0 and time.monotonic() > deadline:
                raise ProcTooLarge(f"/proc/{pid}/fd not read within the deadline")
            try:
                target = os.readlink(entry.path)
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:[") and target.endswith("]"):
                inodes.add(int(target[8:-1]))
    return inodes


def unix_listeners(pid: int, inodes: set[int]) -> list[UnixListener]:
    """The listening Unix stream sockets among ``inodes``, with their names."""
    found: list[UnixListener] = []
    # Num RefCount Protocol Flags Type St Inode Path
    for line in read_bounded(f"/proc/{pid}/net/unix").split(b"\n")[1:]:
        fields = line.split(b" ", 7)
        if len(fields) < 8 or not fields[6].isdigit() or int(fields[6]) not in inodes:
            continue
        flags, kind = int(fields[3], 16), int(fields[4], 16)
        if kind != 1 or not flags & _ACCEPTING or not fields[7]:
            continue  # not SOCK_STREAM, not listening, or unnamed
        name = fields[7]
        # The kernel shows an abstract name's leading NUL (and any other) as "@".
        found.append(UnixListener(int(fields[6]), b"\0" + name[1:] if name[:1] == b"@" else name))
    return found


def tcp_listeners(pid: int) -> list[TcpListener]:
    """The listening TCP sockets of ``pid``'s network namespace."""
    return [
        TcpListener(int(fields[9]), *kernel_address(fields[1]), int(fields[7]))
        for fields in _tcp_rows(pid)
        if fields[3] == _TCP_LISTEN
    ]


def tcp_inode(pid: int, local_port: int, remote_port: int) -> int | None:
    """The inode of the established TCP socket in ``pid``'s namespace whose own port is
    ``local_port`` and whose peer's is ``remote_port`` (on a loopback address)."""
    for fields in _tcp_rows(pid):
        if fields[3] != _TCP_ESTABLISHED:
            continue
        local, remote = kernel_address(fields[1]), kernel_address(fields[2])
        if local[1] == local_port and remote[1] == remote_port and remote[0].is_loopback:
            return int(fields[9])
    return None


def process_uids(pid: int) -> set[int]:
    """``pid``'s real, effective, saved and filesystem uids."""
    for line in read_bounded(f"/proc/{pid}/status", 1 << 16).splitlines():
        if line.startswith(b"Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    raise OSError(f"/proc/{pid}/status has no Uid line")


def same_network_namespace(pid: int) -> bool:
    """Whether ``pid`` shares this process's network namespace (else its loopback and
    abstract sockets are not the ones this process would reach)."""
    return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")


def _tcp_rows(pid: int) -> list[list[str]]:
    rows: list[list[str]] = []
    for table in ("tcp", "tcp6"):
        try:
            text = read_bounded(f"/proc/{pid}/net/{table}").decode("ascii", "replace")
        except FileNotFoundError:
            continue  # no IPv6 in this kernel
        # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        rows.extend(f for f in (line.split() for line in text.splitlines()[1:]) if len(f) >= 10)
    return rows


def kernel_address(field: str) -> tuple[Address, int]:
    """``0100007F:1F90`` (or 32 hex digits for IPv6) as (address, port). The kernel
    prints each 32-bit word of the address in host order."""
    hex_address, hex_port = field.split(":")
    packed = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        packed = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
    address = ipaddress.ip_address(packed)
    return address, int(hex_port, 16)
