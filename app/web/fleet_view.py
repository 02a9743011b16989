"""The dashboard's view of the whole fleet (contract 9): which nodes share this
database, and the timers other nodes' reapers hold.

The live feed and the reader only know this service's own engine. A timer another
node armed reaches this service only through the shared database, so the dashboard
reads those from there, each time the page polls. A node alone on its database (the
SQLite default) never asks: the one question it adds is the nodes' statuses, asked at
most every ``_NODES_FRESH`` seconds whoever polls, so its page stays as fast and as
live as before. A hub has no engine of its own: every timer it shows is read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from app.db import store
from app.db.models import Node, TimerPublic
from app.db.nodes import NodeStatus, node_statuses
from app.web.live_feed import LiveFeed

__all__ = ["Fleet", "FleetTimers", "node_rows"]

_nodes = Node.__table__  # type: ignore[attr-defined]

# Up/down changes after --node-timeout (15 s by default): a status this old is fresh enough.
_NODES_FRESH = 2.0
# A hub's counts and chart (per minute, over an hour) are read again this often.
_COUNTS_FRESH = 5.0


@dataclass(frozen=True, slots=True)
class FleetTimers:
    """Other nodes' timers, as the dashboard's rows: active ones soonest first (and how
    many match in all), and the newest ends."""

    active: list[dict[str, Any]]
    active_total: int
    ends: list[dict[str, Any]]


class Fleet:
    """One service's view of the fleet; see the module's docstring."""

    def __init__(self, engine: Engine, node: str, hub: bool, timeout: float) -> None:
        self._engine = engine
        self._node = node
        self._hub = hub
        self._timeout = timeout
        self._lock = threading.Lock()
        self._nodes: list[NodeStatus] = []
        self._asked_at = -_NODES_FRESH
        self._alone = not hub
        self._feed: LiveFeed | None = None
        self._feed_at = -_COUNTS_FRESH

    @property
    def local(self) -> str | None:
        """The node whose timers the engine holds: None on a hub, which holds none."""
        return None if self._hub else self._node

    def nodes(self, local_active: int) -> list[NodeStatus]:
        """Every node and its status, by name, at most ``_NODES_FRESH`` seconds old.
        ``local_active`` is this node's engine's count, the one a node alone shows."""
        with self._lock:
            if time.monotonic() - self._asked_at >= _NODES_FRESH:
                self._ask()
                self._asked_at = time.monotonic()
            statuses = self._nodes
        if self._hub:
            return statuses
        # This node's own count is its engine's, live; the database's is a scan of its
        # active timers (100k in a big job), which a node alone never asks for.
        return [
            replace(status, active_timers=local_active) if status.name == self._node else status
            for status in statuses
        ]

    def _ask(self) -> None:
        statuses = node_statuses(self._engine, self._timeout, count_active=False)
        self._alone = not self._hub and all(status.name == self._node for status in statuses)
        # The counts read every active timer of the fleet: only when there is a fleet.
        self._nodes = statuses if self._alone else node_statuses(self._engine, self._timeout)

    def hub_feed(self) -> LiveFeed:
        """On a hub, whose engine sees no events: the fleet's counts and chart as the
        database has them, read again at most every ``_COUNTS_FRESH`` seconds."""
        with self._lock:
            if self._feed is None or time.monotonic() - self._feed_at >= _COUNTS_FRESH:
                feed = LiveFeed()
                feed.seed(self._engine)
                self._feed, self._feed_at = feed, time.monotonic()
            return self._feed

    def has_others(self) -> bool:
        """Whether any timer may come from elsewhere than the local engine (as of the
        last ``nodes``)."""
        return not self._alone

    def timers(
        self, node: str | None, pid: int | None, scope: str | None, active_limit: int, ends: int
    ) -> FleetTimers:
        """The timers of the other nodes (every node on a hub), filtered."""
        with Session(self._engine) as session:
            active, total = store.fleet_active(session, self.local, node, pid, scope, active_limit)
            ended = store.fleet_recently_ended(session, self.local, node, ends)
        return FleetTimers(
            [TimerPublic.from_row(row).model_dump(mode="json") for row in active],
            total,
            [TimerPublic.from_row(row).model_dump(mode="json", exclude={"uid"}) for row in ended],
        )


def node_rows(statuses: Sequence[NodeStatus]) -> list[dict[str, Any]]:
    return [asdict(status) for status in statuses]
