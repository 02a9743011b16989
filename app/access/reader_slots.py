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
  ``detail`` and ``Retry-After``: never a 500, never minutes of waiting;
- one user's reads hold at most ``per_user`` of the slots (half): otherwise a user
  asking for big pages over many connections, again and again, could hold all four
  and queue ahead of every other user's reads, root's dashboard among them, until they
  waited out the 5 s into a 503. Root, the service's uid and the admin token are
  exempt (as for connections); non-local peers count as one user.

``/healthz`` reads no database and takes no slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import anyio
from fastapi import HTTPException, status

from app.db.database import POOL_CONNECTIONS

__all__ = ["EXEMPT", "READER_SLOTS", "READ_WAIT_SECONDS", "ReaderSlots"]

# Reads building their answers at once. Each is Python under the GIL: more at once add
# no throughput on a few cores, only contention with the event loop (10 at once left
# /healthz unanswered for 10 s under a flood of big pages; 4 answered within 4 s).
READER_SLOTS = 4
assert READER_SLOTS < POOL_CONNECTIONS  # the rest of the pool is the service's own

# A read waits this long for a slot: long enough to ride out a burst of big pages,
# short enough that a client retries rather than hangs.
READ_WAIT_SECONDS = 5.0


# The reader of a caller with no share to keep: root, the service's uid, the admin token.
EXEMPT = "exempt"


@dataclass(slots=True)
class _Share:
    """One user's slots: a semaphore, and how many of its reads hold or wait for it
    (the share is forgotten when none do, so users come and go without a trace)."""

    free: anyio.Semaphore
    users: int = field(default=0)


class ReaderSlots:
    def __init__(
        self,
        slots: int = READER_SLOTS,
        wait: float = READ_WAIT_SECONDS,
        per_user: int = READER_SLOTS // 2,
    ) -> None:
        self.slots = slots
        self.wait = wait
        self.per_user = per_user
        # Waited for on the event loop, not in a thread: a thousand waiting reads hold
        # no thread of the pool, and do not compete for the GIL with the ones served.
        self._free = anyio.Semaphore(slots)
        self._shares: dict[int | None, _Share] = {}

    @asynccontextmanager
    async def slot(self, user: int | str | None = EXEMPT) -> AsyncIterator[None]:
        """Hold one slot for the block, or raise the 503 that says to retry. ``user``:
        the caller's uid (None: a non-local peer), or ``EXEMPT``."""
        async with AsyncExitStack() as held:
            own_share = True
            try:
                with anyio.fail_after(self.wait):
                    if not isinstance(user, str):  # EXEMPT takes no share
                        await held.enter_async_context(self._share(user))
                    own_share = False
                    await self._free.acquire()
            except TimeoutError:
                busy = (
                    f"your reads have held {self.per_user} of the {self.slots} database "
                    "readers, a user's share,"
                    if own_share
                    else f"all {self.slots} database readers have been in use"
                )
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    detail=f"the service is busy: {busy} for {self.wait:g} s; "
                    "retry in a few seconds",
                    headers={"Retry-After": "2"},
                ) from None
            try:
                yield
            finally:
                self._free.release()

    @asynccontextmanager
    async def _share(self, user: int | None) -> AsyncIterator[None]:
        share = self._shares.get(user)
        if share is None:
            share = self._shares[user] = _Share(anyio.Semaphore(self.per_user))
        share.users += 1
        try:
            async with share.free:
                yield
        finally:
            share.users -= 1
            if not share.users:
                del self._shares[user]
