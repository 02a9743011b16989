"""A share of the database pool for HTTP reads, so that readers can never take it all.

Every request that reads the database holds a pooled connection while it queries and
builds its answer. Unbounded, 600 concurrent reads of a big page took every connection
of the pool: the rest waited SQLAlchemy's 30 s for one and failed with 500 (``QueuePool
limit reached``), and the recorder, the node's heartbeat and the health probes waited
behind them. So reads take a slot first:

- at most ``slots`` reads hold a connection at once (fewer than the pool: the rest is
  kept for the service's own work). Each read is a thread building its answer under
  the GIL; many at once starved the event loop, and ``/healthz`` with it, for seconds;
- a read that finds no slot free within ``wait`` seconds answers **503** with a JSON
  ``detail`` and ``Retry-After``: never a 500, never minutes of waiting.

``/healthz`` reads no database and takes no slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import HTTPException, status

from .db import POOL_CONNECTIONS

__all__ = ["READER_SLOTS", "READ_WAIT_SECONDS", "ReaderSlots"]

# Reads building their answers at once. Each is Python under the GIL: more at once add
# no throughput on a few cores, only contention with the event loop (10 at once left
# /healthz unanswered for 10 s under a flood of big pages; 4 answered within 4 s).
READER_SLOTS = 4
assert READER_SLOTS < POOL_CONNECTIONS  # the rest of the pool is the service's own

# A read waits this long for a slot: long enough to ride out a burst of big pages,
# short enough that a client retries rather than hangs.
READ_WAIT_SECONDS = 5.0


class ReaderSlots:
    def __init__(self, slots: int = READER_SLOTS, wait: float = READ_WAIT_SECONDS) -> None:
        self.slots = slots
        self.wait = wait
        # Waited for on the event loop, not in a thread: a thousand waiting reads hold
        # no thread of the pool, and do not compete for the GIL with the ones served.
        self._free = anyio.Semaphore(slots)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block, or raise the 503 that says to retry."""
        try:
            with anyio.fail_after(self.wait):
                await self._free.acquire()
        except TimeoutError:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"the service is busy: all {self.slots} database readers have been "
                f"in use for {self.wait:g} s; retry in a few seconds",
                headers={"Retry-After": "2"},
            ) from None
        try:
            yield
        finally:
            self._free.release()
