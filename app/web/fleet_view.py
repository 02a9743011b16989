"""The dashboard's view of the whole fleet (contract 9): which nodes share this
database, and the timers other nodes' reapers hold.

The live feed and the reader only know this service's own engine. A timer another
node armed reaches this service only through the shared database, so the dashboard
reads those from there, each time the page polls. A node alone on its database (the
SQLite default) never asks: the one question it adds is the nodes' statuses, asked at
most every ``_NODES_FRESH`` seconds whoever polls, so its page stays as fast and as
live as before. A hub has no engine of its own: every timer it shows is read.

A filter on a job reads the database for every node, this one's too: the engine's
reader scans by pid and scope only, and a job's timers are a handful of its rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from app.db import store
from app.db.models import Node, Timer, TimerPublic
from app.db.nodes import NodeStatus, node_statuses
from app.web.live_feed import LiveFeed, recent_kills
from timer_core.engine import TimerState

__all__ = ["Fleet", "FleetTimers", "node_rows"]

_nodes = Node.__table__  # type: ignore[attr-defined]

# Up/down changes after --node-timeout (15 s by default): a status this old is fresh enough.
_NODES_FRESH = 2.0
# A hub's counts and chart (per minute, over an hour) are read again this often.
_COUNTS_FRESH = 5.0


@dataclass(frozen=True, slots=True)
class FleetTimers:
    """Other nodes' timers, as the dashboard's rows: active ones soonest first (and how
    many match in all), the newest ends and the newest kills."""

    active: list[dict[str, Any]]
    active_total: int
    ends: list[dict[str, Any]]
    kills: list[dict[str, Any]]


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
        self,
        node: str | None,
        pid: int | None,
        scope: str | None,
        active_limit: int,
        ends: int,
        kills: int,
    ) -> FleetTimers:
        """The timers of the other nodes (every node on a hub), filtered."""
        with Session(self._engine) as session:
            active, total = store.fleet_active(session, self.local, node, pid, scope, active_limit)
            ended = store.fleet_recently_ended(session, self.local, node, ends)
            killed = recent_kills(session, kills, not_of=self.local)
        return FleetTimers(
            [TimerPublic.from_row(row).model_dump(mode="json") for row in active],
            total,
            [_ended(row) for row in ended],
            [_ended(row) for row in killed],
        )

    def job_active(
        self, job: str, node: str | None, pid: int | None, scope: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """The active timers of one job on every node (``node``'s only, when given),
        soonest deadline first, at most ``limit``, and how many match in all."""
        # Read by the state index, the job compared row by row: a job's timers are all it
        # ever armed (a rank releases several a second, millions a week), its active
        # ones a handful. With ``job_id = ?`` SQLite picks the job's index and reads every
        # timer the job ever had on each poll (300,000: 60 ms); coalesce keeps it off.
        query = select(Timer).where(
            Timer.state == TimerState.ACTIVE, func.coalesce(col(Timer.job_id), "") == job
        )
        if node is not None:
            query = query.where(Timer.node == node)
        if pid is not None:
            query = query.where(Timer.pid == pid)
        with Session(self._engine) as session:
            if scope is not None:
                # A substring, case and all, as the engine's reader matches (LIKE would
                # ignore case on SQLite).
                sqlite = session.get_bind().dialect.name == "sqlite"
                position = func.instr if sqlite else func.strpos
                query = query.where(position(col(Timer.scope_id), scope) > 0)
            ordered = query.order_by(col(Timer.expiration_time), col(Timer.id))
            rows = session.exec(ordered.limit(limit)).all()
            total = len(rows)
            if total == limit:
                total = session.exec(select(func.count()).select_from(query.subquery())).one()
        return [TimerPublic.from_row(row).model_dump(mode="json") for row in rows], int(total)


def _ended(row: Timer) -> dict[str, Any]:
    # As the live feed's rows: the dashboard's ended timers have always left the uid out.
    return TimerPublic.from_row(row).model_dump(mode="json", exclude={"uid"})


def node_rows(statuses: Sequence[NodeStatus]) -> list[dict[str, Any]]:
    return [asdict(status) for status in statuses]
