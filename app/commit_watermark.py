"""The commit watermark: the highest event number n such that every event numbered
≤ n is in the database or was deliberately set aside, and the requests waiting on it.

A 201 means "my acquisition is committed". The recorder writes in batches, and a batch
may finish out of order with respect to another event (one set aside on its own, an
event that arrived late): taking the highest number written would answer a request
whose event is still in memory. So numbers are marked finished one by one, and the
watermark only moves over an unbroken run of them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

__all__ = ["CommitWatermark"]

_Waiter = tuple[int, "asyncio.Future[None]", asyncio.AbstractEventLoop]


class CommitWatermark:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0
        # Numbers finished above the watermark, waiting for the gap below them to close.
        self._ahead: set[int] = set()
        self._waiters: list[_Waiter] = []

    @property
    def value(self) -> int:
        return self._value

    def finish(self, seqs: Iterable[int]) -> None:
        """Mark events written (or set aside for good); wake whoever that satisfies.
        Any thread."""
        with self._lock:
            value = self._value
            for seq in seqs:
                if seq == value + 1:
                    value = seq
                elif seq > value:
                    self._ahead.add(seq)
            while value + 1 in self._ahead:
                value += 1
                self._ahead.remove(value)
            self._value = value
            ready = [w for w in self._waiters if w[0] <= value]
            if ready:
                self._waiters = [w for w in self._waiters if w[0] > value]
        for _, future, loop in ready:
            loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, seq: int, timeout: float) -> bool:
        """True once every event up to ``seq`` is finished; False after ``timeout``."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._value >= seq:
                return True
            future: asyncio.Future[None] = loop.create_future()
            waiter = (seq, future, loop)
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            # A request that gave up must not stay listed while the disk is down.
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
