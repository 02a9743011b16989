"""A thread that waits in an epoll set, and that another thread can wake or stop at once.

The exit watcher waits on the workers' pidfds, and the FIFO readers on their FIFOs.
``stop()``, or new work for a waiting thread, must not wait for a poll to time out: so
the set also holds the read end of a pipe of its own, and ``wake`` writes a byte into it.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

__all__ = ["PollThread"]


class PollThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = False
        self.closed = False
        self._thread: threading.Thread | None = None
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_read, select.EPOLLIN)

    def register(self, fd: int) -> None:
        self._epoll.register(fd, select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        self._epoll.unregister(fd)

    def wake(self) -> None:
        os.write(self._wake_write, b"x")

    def poll(self, timeout: float | None) -> list[int]:
        """The registered descriptors that are readable within ``timeout`` seconds
        (None: however long it takes). A wake ends the wait early, and is used up."""
        ready: list[int] = []
        for fd, _ in self._epoll.poll(-1 if timeout is None else timeout):
            if fd != self._wake_read:
                ready.append(fd)
                continue
            while True:
                try:
                    os.read(self._wake_read, 4096)
                except BlockingIOError:
                    break
        return ready

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if woken; the wake stays for the next ``poll``.
        For a reader that is paused: its descriptors are readable, so a poll would
        return at once."""
        select.select([self._wake_read], [], [], seconds)

    def start(self, run: Callable[[], None]) -> None:
        """Run ``run`` on the thread; it should return once ``stopping`` is true."""
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Set ``stopping``, wake the thread and wait for it (5 s at most). Once closed,
        nothing: a service's shutdown may stop its engine twice."""
        if self.closed:
            return
        self.stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def close(self) -> None:
        """Release the epoll set and the pipe; after ``stop``. Closing twice is nothing."""
        if self.closed:
            return
        self.closed = True
        self._epoll.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
