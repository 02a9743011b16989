"""How many HTTP connections the service keeps, so that sockets can never take the
descriptors a kill needs.

An idle socket costs a client nothing and the service a descriptor. Unbounded, 400 idle
connections under a limit of 256 descriptors left none for a pidfd, and the kill failed.
So a new connection is admitted only while

- fewer than ``--max-connections`` are open,
- its user holds fewer than ``--max-connections-per-user`` (a local peer is its uid, as
  the kernel tells; every non-local peer counts as one user), so that one user cannot
  take the slots of all others: root and the service's own uid are exempt, as they may
  stop the service anyway and are what an operator uses to look at it, and
- the process's open descriptors stay below its limit minus the kill path's reserve
  (``timer_core.engine.descriptors``): pidfds of live workers and the database come first.

At either bound, the oldest connection with no request in progress (idle between
requests, or still sending its head: what a flood holds) is closed to make room, so a
flood cannot lock real clients out. If every connection is busy, the new one is answered
503 and closed at once, which releases its descriptor. One over its user's share is
answered 429 and closed: the user frees one of its own to open another.

Every method but the status ones runs on the event loop's thread: no lock. Health and
metrics read plain counters from other threads.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from timer_core.engine.descriptors import descriptor_limit, kill_path_reserve, open_descriptors

__all__ = ["SHED_REASONS", "Connection", "ConnectionGate"]

# Why connections were closed early: to make room, turned away, too slow to send their
# request (the request timeout; a slowloris), over their user's share, or holding
# response data their client did not read (app.access.unsent_data: stalled for the send
# timeout, or over the total of unsent bytes).
SHED_REASONS = ("evicted", "refused", "timed_out", "per_user", "stalled", "unsent_budget")
# Closing these says nothing about the service's own pressure: health stays ok.
_CLIENT_FAULTS = frozenset(("timed_out", "per_user", "stalled", "unsent_budget"))
# A measured descriptor count is trusted this long, corrected by the connections opened
# and closed since; near the limit it is measured again before any decision.
_MEASURE_EVERY = 1.0
# Candidates looked at, oldest first, for one to close: a bound on the work per accept.
_EVICTION_SCAN = 64
# Health and metrics count the open descriptors at most this often (a dashboard page
# polls health twice a second, and a listing of 60k descriptors takes milliseconds).
_STATUS_EVERY = 0.5
# Health says "degraded" this long after connections were turned away or evicted.
_SHED_RECENT_SECONDS = 60.0
# ... and when this share of the descriptor limit is in use.
NEAR_LIMIT = 0.8


class Connection(Protocol):
    def evictable(self) -> bool:
        """True when no request is being handled on it (closing it loses nothing)."""

    def evict(self) -> None:
        """Close it now."""


class ConnectionGate:
    def __init__(
        self,
        max_connections: int,
        *,
        max_per_user: int | None = None,
        limit: Callable[[], int] = descriptor_limit,
        count_open: Callable[[], int] = open_descriptors,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_user = max_per_user
        self._exempt = frozenset((0, os.geteuid()))
        # Open connections per user (None: every non-local peer).
        self._per_user: collections.Counter[int | None] = collections.Counter()
        self._limit = limit
        self._count_open = count_open
        self._clock = clock
        # Open connections, least recently active first, with their user.
        self._open: dict[Connection, int | None] = {}
        self._measured = 0
        self._measured_connections = 0
        self._measured_at: float | None = None
        self.shed: collections.Counter[str] = collections.Counter()
        self.last_shed_at: float | None = None
        self._status_open: tuple[float, int] | None = None

    @property
    def connections(self) -> int:
        return len(self._open)

    def budget(self) -> int:
        """Descriptors the process may have open before connections are shed."""
        limit = self._limit()
        return limit - kill_path_reserve(limit)

    # ---- the event loop's side -----------------------------------------------------------

    def user_full(self, uid: int | None) -> bool:
        """Whether ``uid`` (None: a non-local peer) already holds its share of
        connections; if so, one more is refused (429) and counted."""
        if self.max_per_user is None or uid in self._exempt:
            return False
        if self._per_user[uid] < self.max_per_user:
            return False
        self._count_shed("per_user")
        return True

    def admit(self, connection: Connection, uid: int | None = None) -> bool:
        """Whether to keep a just-accepted connection (its socket is already open) of
        ``uid``. May close an idle one to make room. False: answer 503 and close it."""
        if len(self._open) >= self.max_connections or self._short_of_descriptors():
            victim = self._oldest_idle()
            if victim is None:
                self._count_shed("refused")
                return False
            self._count_shed("evicted")
            self.closed(victim)
            victim.evict()
        self._open[connection] = uid
        self._per_user[uid] += 1
        return True

    def active(self, connection: Connection) -> None:
        """It just finished a request: the last to be closed to make room."""
        if connection in self._open:
            self._open[connection] = self._open.pop(connection)

    def closed(self, connection: Connection) -> None:
        if connection not in self._open:
            return
        uid = self._open.pop(connection)
        self._per_user[uid] -= 1
        if not self._per_user[uid]:
            del self._per_user[uid]

    def shed_by_client(self, reason: str) -> None:
        """A connection was closed for its client's fault (``_CLIENT_FAULTS``)."""
        self._count_shed(reason)

    def timed_out(self) -> None:
        """A connection was closed for not sending its request in time."""
        self._count_shed("timed_out")

    def _count_shed(self, reason: str) -> None:
        self.shed[reason] += 1
        if reason not in _CLIENT_FAULTS:  # a slow or greedy client is no sign of pressure
            self.last_shed_at = self._clock()

    def _short_of_descriptors(self) -> bool:
        now = self._clock()
        budget = self.budget()
        if self._measured_at is None or now - self._measured_at >= _MEASURE_EVERY:
            self._measure(now)
        estimate = self._measured + len(self._open) - self._measured_connections
        if estimate < budget:
            return False
        self._measure(now)  # close to the line: count exactly before shedding anyone
        return self._measured >= budget

    def _measure(self, now: float) -> None:
        self._measured = self._count_open()
        self._measured_connections = len(self._open)
        self._measured_at = now

    def _oldest_idle(self) -> Connection | None:
        for index, connection in enumerate(self._open):
            if index >= _EVICTION_SCAN:
                return None
            if connection.evictable():
                return connection
        return None

    # ---- status, read from any thread ----------------------------------------------------

    def status(self) -> dict[str, Any]:
        limit = self._limit()
        now = self._clock()
        counted = self._status_open
        if counted is None or now - counted[0] >= _STATUS_EVERY:
            counted = self._status_open = (now, self._count_open())
        return {
            "open": counted[1],
            "limit": limit,
            "reserved_for_kills": kill_path_reserve(limit),
            "connections": len(self._open),
            "max_connections": self.max_connections,
            "max_connections_per_user": self.max_per_user,
            "connections_shed": {reason: self.shed[reason] for reason in SHED_REASONS},
        }

    def problems(self, status: dict[str, Any]) -> list[str]:
        """Why health is degraded, from ``status()``: close to the descriptor limit, or
        connections turned away or closed to make room in the last minute."""
        found = []
        if status["open"] >= NEAR_LIMIT * status["limit"]:
            found.append(
                f"{status['open']} of {status['limit']} file descriptors are open "
                f"(over {NEAR_LIMIT:.0%}); raise LimitNOFILE"
            )
        shed_at = self.last_shed_at
        if shed_at is not None and self._clock() - shed_at < _SHED_RECENT_SECONDS:
            shed = status["connections_shed"]
            found.append(
                f"HTTP connections at their limit ({status['connections']} open, "
                f"{status['open']} of {status['limit']} descriptors): "
                f"{shed['evicted']} idle ones closed to make room and {shed['refused']} "
                "refused since start, the last less than a minute ago"
            )
        return found
