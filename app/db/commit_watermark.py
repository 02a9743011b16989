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

_Waiter = tuple[int, "asyncio.Future[bool]", asyncio.AbstractEventLoop]


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
            ready: dict[asyncio.AbstractEventLoop, list[asyncio.Future[bool]]] = {}
            if self._waiters:
                waiting = []
                for waiter in self._waiters:
                    if waiter[0] <= value:
                        ready.setdefault(waiter[2], []).append(waiter[1])
                    else:
                        waiting.append(waiter)
                self._waiters = waiting
        # One wake-up per loop for the whole batch, not one per waiting request: each
        # call_soon_threadsafe writes to the loop's wake-up pipe.
        for loop, futures in ready.items():
            loop.call_soon_threadsafe(_resolve, futures, True)

    async def wait(self, seq: int, timeout: float) -> bool:
        """True once every event up to ``seq`` is finished; False after ``timeout``."""
        if self._value >= seq:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        waiter = (seq, future, loop)
        with self._lock:
            if self._value >= seq:
                return True
            self._waiters.append(waiter)
        # A timer handle on the future itself: asyncio.wait_for would wrap it in a task
        # and a second future, on every write.
        expiry = loop.call_later(timeout, _resolve, [future], False)
        committed = False
        try:
            committed = await future
            return committed
        finally:
            expiry.cancel()
            if not committed:
                # A request that gave up (or was cancelled) must not stay listed while
                # the disk is down.
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)


def _resolve(futures: list[asyncio.Future[bool]], committed: bool) -> None:
    for future in futures:
        if not future.done():
            future.set_result(committed)
