"""``connect()`` to a Unix socket by its path, within a deadline.

A socket's timeout bounds the wait for the listener, not the lookup of its path: that
happens inside the system call, and no timeout or signal of this process ends it. The
path is the worker's to choose, and a directory on it can be a FUSE filesystem that
never answers (or a hard NFS mount whose server is gone): the lookup then sleeps until
that filesystem answers or is torn down. So the connect runs in a thread of its own,
and the caller waits for it at most until the deadline. A thread still stuck then is
left behind: it owns its socket, and closes it when (if ever) the lookup returns. An
abstract name or a TCP address involves no lookup and is connected directly.
"""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["LookupAbandoned", "connect_within"]


class LookupAbandoned(TimeoutError):
    """The path's lookup outlived the deadline: the connection now belongs to the
    thread stuck in it, and the caller must neither use nor close it."""


def connect_within(
    connection: socket.socket, address: bytes | tuple[str, int], deadline: float
) -> None:
    """Connect ``connection`` to ``address`` by ``deadline`` (``time.monotonic()``), or
    raise ``LookupAbandoned``, ``TimeoutError`` or the ``OSError`` of the connect."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no time left to connect")
    connection.settimeout(remaining)
    if not isinstance(address, bytes) or address[:1] == b"\0":
        connection.connect(address)
        return
    attempt = _Attempt(connection, address)
    threading.Thread(target=attempt.run, name="worker-server-connect", daemon=True).start()
    if not attempt.done.wait(max(deadline - time.monotonic(), 0)):
        with attempt.lock:
            if not attempt.done.is_set():
                attempt.abandoned = True
                raise LookupAbandoned(f"the lookup of {address!r} did not end by the deadline")
    if attempt.error is not None:
        raise attempt.error


class _Attempt:
    def __init__(self, connection: socket.socket, address: bytes) -> None:
        self.connection = connection
        self.address = address
        self.error: OSError | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False

    def run(self) -> None:
        try:
            self.connection.connect(self.address)
        except OSError as error:
            self.error = error
        with self.lock:
            self.done.set()
            if self.abandoned:
                self.connection.close()
