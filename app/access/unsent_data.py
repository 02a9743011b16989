"""Bounds on response data written but not yet read by the client: how long it may sit
unread, and how much of it all connections together may hold.

A response is built whole and handed to the connection's transport, which keeps in
memory whatever the client's socket does not take. A client that sends a request and
never reads pins that memory for as long as its connection lives: 250 such connections
asking for a 6 MB page of timers grew the service from 248 MB to 1.7 GB. Closing the
connection (``transport.close()``) does not help: the transport first waits for the
buffer to drain, which never happens. Only ``abort()`` drops it.

uvicorn already stops producing more for a connection whose buffer is over the
high-water mark (it awaits the drain before its next send), so one connection holds at
most one response plus 64 KiB. Here, for every connection whose transport paused
writing (what a buffer over the high-water mark makes it do):

- **No progress for ``stall_seconds``** (the buffer did not shrink): the connection is
  aborted, and its buffer freed. A slow but reading client shrinks it and stays.
- **Over ``max_total`` bytes across all connections**: connections are aborted until
  the total is back under it, each time the one whose client went longest without
  taking any data among those of the user (the peer's uid) holding the most unsent
  bytes. Root's and the service's uid's connections go only once no other user's are
  left. So one user's flood of unread pages costs that user its connections, never
  root's dashboard or another user's slow but honest reader, whose connections would
  otherwise look as stale as the flood's. The one connection left is never aborted
  for size alone: a single response is bounded by the page limits, and the stall
  timeout still ends it.

Everything runs on the event loop's thread: no lock.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["UnsentConnection", "UnsentData"]

# How often the paused connections are looked at for progress: the stall timeout is
# honoured to within this.
_SWEEP_SECONDS = 1.0


class UnsentConnection(Protocol):
    def unsent_bytes(self) -> int:
        """What its transport still holds for the client."""

    def abort(self, reason: str) -> None:
        """Drop the connection and its unsent data now."""


@dataclass(slots=True)
class _Held:
    size: int
    progress_at: float
    user: int | None  # the peer's uid (None: not known, as a remote peer)


class UnsentData:
    def __init__(
        self,
        stall_seconds: float,
        max_total: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_seconds = stall_seconds
        self.max_total = max_total
        self._clock = clock
        self._held: dict[UnsentConnection, _Held] = {}
        # Aborted for the total only once no other user's connection is left.
        self._exempt = frozenset((0, os.geteuid()))
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def total(self) -> int:
        """Bytes held for paused connections, as last measured."""
        return sum(held.size for held in self._held.values())

    @property
    def connections(self) -> int:
        return len(self._held)

    def status(self) -> dict[str, int]:
        """For health and metrics (read from other threads: a snapshot, maybe a sweep old)."""
        held = list(self._held.values())
        return {
            "unsent_connections": len(held),
            "unsent_bytes": sum(entry.size for entry in held),
            "max_unsent_bytes": self.max_total,
        }

    def paused(self, connection: UnsentConnection, user: int | None = None) -> None:
        """Its transport's buffer went over the high-water mark; ``user``: its peer's
        uid (None: not known)."""
        now = self._clock()
        self._held[connection] = _Held(connection.unsent_bytes(), now, user)
        self._keep_total(now)
        if self._sweeper is None and self._held:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)

    def drained(self, connection: UnsentConnection) -> None:
        """Its buffer fell under the low-water mark, or the connection is gone."""
        self._held.pop(connection, None)

    def sweep(self) -> None:
        """Abort the connections stalled too long, then keep the total under its cap."""
        now = self._clock()
        self._measure(now)
        for connection, held in list(self._held.items()):
            if now - held.progress_at >= self.stall_seconds:
                self._abort(connection, "stalled")
        self._keep_total(now, measured=True)

    def _sweep(self) -> None:
        self._sweeper = None
        self.sweep()
        if self._held:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)

    def _measure(self, now: float) -> None:
        for connection, held in self._held.items():
            size = connection.unsent_bytes()
            if size < held.size:  # the client took some: it is reading
                held.progress_at = now
            held.size = size

    def _keep_total(self, now: float, measured: bool = False) -> None:
        if self.total <= self.max_total:
            return
        if not measured:
            # Before choosing whom to drop, see who has read since the last sweep: a
            # client reading a big page must not look as stalled as one that never reads.
            self._measure(now)
        total = self.total
        while total > self.max_total and len(self._held) > 1:
            connection, held = self._next_to_drop()
            total -= held.size
            self._abort(connection, "unsent_budget")

    def _next_to_drop(self) -> tuple[UnsentConnection, _Held]:
        """The stalest connection of the user holding the most (exempt users last)."""
        by_user: collections.Counter[int | None] = collections.Counter()
        for held in self._held.values():
            by_user[held.user] += held.size
        others = [user for user in by_user if user not in self._exempt]
        greediest = max(others or by_user, key=by_user.__getitem__)
        return min(
            ((c, h) for c, h in self._held.items() if h.user == greediest),
            key=lambda item: item[1].progress_at,
        )

    def _abort(self, connection: UnsentConnection, reason: str) -> None:
        self._held.pop(connection, None)
        connection.abort(reason)
