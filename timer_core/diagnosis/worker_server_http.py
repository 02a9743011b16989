"""One request to torch's worker server and its answer, bounded in time and bytes.

Torch's ``_WorkerServer`` (cpp-httplib) speaks HTTP/1.1 over its Unix or TCP socket:
``POST /handler/<name>`` answers ``200`` with a ``Content-Length`` body (``pong``, a
faulthandler traceback, the flight recorder's JSON) or ``404`` for an unknown handler.
The other side is the worker's to program, so the answer is read as hostile input:
every wait ends at the caller's deadline, the head and the body have byte caps (a body
announced above the cap is refused before it is read), and anything that is not such
an answer (no status line, no length, chunked, a short body) is refused with a reason.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["HEAD_LIMIT", "Refusal", "Why", "exchange"]

# Torch's heads are about 100 bytes; a few headers more are still an answer.
HEAD_LIMIT = 8 * 1024


class Why(StrEnum):
    """Why a worker server's answer was not taken."""

    NO_SERVER = "no-server"  # the worker listens on no socket that answers ping
    NOT_ITS_OWN = "not-its-own"  # the socket is answered by another process
    UNREADABLE = "unreadable"  # /proc of the worker could not be read (gone, too large)
    UNREACHABLE = "unreachable"  # connecting failed (refused, backlog full, gone)
    TIMEOUT = "timeout"  # no whole answer before the deadline
    TOO_LARGE = "too-large"  # the answer passed its byte cap
    GARBAGE = "garbage"  # not an HTTP answer of the expected shape
    STATUS = "status"  # an HTTP answer, but not 200 (e.g. no such handler)


@dataclass(frozen=True, slots=True)
class Refusal:
    why: Why
    detail: str

    def __str__(self) -> str:
        return f"{self.why}: {self.detail}"


def exchange(
    connection: socket.socket, handler: str, max_bytes: int, deadline: float, *, keep_alive: bool
) -> bytes | Refusal:
    """Ask ``handler`` on the connected ``connection`` and return the body of a 200
    answer of at most ``max_bytes``. With ``keep_alive`` the server is asked to keep
    the connection open after it answers (the caller then checks who accepted it)."""
    close = "" if keep_alive else "Connection: close\r\n"
    request = (
        f"POST /handler/{handler} HTTP/1.1\r\nHost: localhost\r\n{close}Content-Length: 0\r\n\r\n"
    )
    try:
        _wait(connection, deadline)
        connection.sendall(request.encode("ascii"))
        buffer = bytearray()
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > HEAD_LIMIT:
                return Refusal(Why.TOO_LARGE, f"head of {handler} longer than {HEAD_LIMIT} bytes")
            if not _receive(connection, buffer, deadline, HEAD_LIMIT + 1 - len(buffer)):
                return Refusal(Why.GARBAGE, f"{handler}: connection closed before a whole head")
        status, length = _parse_head(bytes(buffer[:end]), handler)
        if isinstance(status, Refusal):
            return status
        if length > max_bytes:
            return Refusal(Why.TOO_LARGE, f"{handler} announced {length} bytes, cap {max_bytes}")
        body = buffer[end + 4 :]
        while len(body) < length:
            if not _receive(connection, body, deadline, length - len(body)):
                return Refusal(Why.GARBAGE, f"{handler}: body cut at {len(body)} of {length}")
    except TimeoutError:
        return Refusal(Why.TIMEOUT, f"{handler}: no whole answer within the deadline")
    except OSError as error:
        return Refusal(Why.UNREACHABLE, f"{handler}: {error}")
    if len(body) > length:
        return Refusal(Why.GARBAGE, f"{handler}: {len(body) - length} bytes past the body")
    if status != 200:
        return Refusal(Why.STATUS, f"{handler} answered {status}")
    return bytes(body)


def _parse_head(head: bytes, handler: str) -> tuple[int | Refusal, int]:
    """The status and Content-Length of an answer's head, or a refusal."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.0", b"HTTP/1.1") or not parts[1].isdigit():
        return Refusal(Why.GARBAGE, f"{handler}: not an HTTP status line: {lines[0][:80]!r}"), 0
    length: int | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return Refusal(Why.GARBAGE, f"{handler}: not a header: {line[:80]!r}"), 0
        name, value = name.strip().lower(), value.strip()
        if name == b"transfer-encoding":
            return Refusal(Why.GARBAGE, f"{handler}: Transfer-Encoding is not torch's"), 0
        if name == b"content-length":
            if not value.isdigit() or len(value) > 18 or length is not None:
                return Refusal(Why.GARBAGE, f"{handler}: bad Content-Length {value[:40]!r}"), 0
            length = int(value)
    if length is None:
        return Refusal(Why.GARBAGE, f"{handler}: no Content-Length"), 0
    return int(parts[1]), length


def _wait(connection: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    connection.settimeout(remaining)


def _receive(connection: socket.socket, into: bytearray, deadline: float, most: int) -> bool:
    """Append what arrives (at most ``most`` bytes, before the deadline); False at EOF."""
    _wait(connection, deadline)
    chunk = connection.recv(min(most, 1 << 20))
    into += chunk
    return bool(chunk)
