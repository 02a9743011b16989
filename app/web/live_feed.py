"""What the dashboard shows, kept in memory as events arrive: recent ends, recent
kills, per-minute counts for the last hour, and kills in total. Seeded from the
database on start, so a restart does not blank the page.

The kills have a window of their own: releases come by the thousand (a job's ranks
each release several times a second), and in the ends' window alone they push a
kill out of view within seconds."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col

from app.db import store
from app.db.models import Timer, TimerPublic
from timer_core import EventKind, TimerEvent
from timer_core.engine import END_KINDS, TimerState

__all__ = ["LiveFeed", "recent_kills"]

_RECENT_ENDS = 200
_RECENT_KILLS = 50
_MINUTES = 60
# Event kinds (as stored) to the chart's series (named as dashboard.js draws them).
_CHARTED: dict[str, str] = {
    EventKind.ACQUIRED: "acquired",
    EventKind.EXPIRED: "expired",
    EventKind.KILL_FAILED: "expired",
    EventKind.KILLED: "killed",
}


class LiveFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=_RECENT_ENDS)
        self._kills: collections.deque[dict[str, Any]] = collections.deque(maxlen=_RECENT_KILLS)
        self._minutes: dict[int, dict[str, int]] = {}
        self.kills_total = 0

    def seed(self, engine: Engine) -> None:
        since = time.time() - _MINUTES * 60
        with Session(engine) as session:
            ended = store.recently_ended(session, _RECENT_ENDS)
            killed = recent_kills(session, _RECENT_KILLS)
            kills = store.killed_count(session)
            per_minute = store.event_counts_per_minute(session, since, list(_CHARTED))
        with self._lock:
            self.kills_total = kills
            for row in reversed(ended):
                self._recent.appendleft(_ended(TimerPublic.from_row(row)))
            for row in reversed(killed):
                self._kills.appendleft(_ended(TimerPublic.from_row(row)))
            for kind, minute_number, count in per_minute:
                self._count(kind, minute_number * 60.0, count)

    def __call__(self, event: TimerEvent) -> None:
        """Listener: fold one event in."""
        with self._lock:
            self._count(event.kind, event.at)
            if event.sent_signal:
                self.kills_total += 1
            if event.kind in END_KINDS:
                ended = _ended(TimerPublic.from_end(event))
                self._recent.appendleft(ended)
                if ended["state"] == TimerState.KILLED:
                    self._kills.appendleft(ended)

    def _count(self, kind: str, at: float, count: int = 1) -> None:
        series = _CHARTED.get(kind)
        if series is None:
            return
        minute = int(at // 60)
        bucket = self._minutes.setdefault(minute, {"acquired": 0, "expired": 0, "killed": 0})
        bucket[series] += count
        if len(self._minutes) > _MINUTES + 5:
            oldest = int(time.time() // 60) - _MINUTES
            for stale in [m for m in self._minutes if m < oldest]:
                del self._minutes[stale]

    def snapshot(self, now: float) -> dict[str, Any]:
        this_minute = int(now // 60)
        with self._lock:
            chart = [
                {"minute": (this_minute - back) * 60, **self._minutes.get(this_minute - back, {})}
                for back in range(_MINUTES - 1, -1, -1)
            ]
            recent = list(self._recent)
            kills = list(self._kills)
            kills_total = self.kills_total
        for point in chart:
            for series in ("acquired", "expired", "killed"):
                point.setdefault(series, 0)
        return {
            "chart": chart,
            "recent_ends": recent,
            "recent_kills": kills,
            "kills_total": kills_total,
            "expired_last_hour": sum(point["expired"] for point in chart),
            "killed_last_hour": sum(point["killed"] for point in chart),
        }


def recent_kills(session: Session, limit: int, *, not_of: str | None = None) -> list[Timer]:
    """The ``limit`` newest killed timers, newest end first; with ``not_of``, only other
    nodes' (a node's own come from its engine's events). Read by the (state, id) index,
    newest id first: ids follow acquisition, so these are the newest kills but for a
    timer held far longer than the others, and no scan of every kill ever recorded."""
    query = store.TimerFilter(state=TimerState.KILLED).query()
    if not_of is not None:
        # "" is a timer armed before timers had a node: the local node's own.
        query = query.where(col(Timer.node).not_in((not_of, "")))
    rows = session.exec(query.order_by(col(Timer.id).desc()).limit(limit)).all()
    return sorted(rows, key=lambda row: -(row.ended_at or 0.0))


def _ended(timer: TimerPublic) -> dict[str, Any]:
    # The dashboard's rows of ended timers have always left the uid out.
    return timer.model_dump(mode="json", exclude={"uid"})
