"""``GET /timers?state=active`` answered from this node's engine while the database
is away (contract 14).

The engine holds every timer this node armed, so the question a worker or an operator
asks most during an outage, "what is armed here", still has its answer. The page has
the database's shape and order (newest id first, ``next`` a cursor), so a client
pages through it the same way. Another node's timers are only in the database: a
filter naming another node (or any read on a hub, which holds none) gets None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.db.models import Page, TimerPublic
from app.db.store import TimerFilter
from timer_core.engine import Timer

__all__ = ["LocalTimers", "active_page"]


class LocalTimers(Protocol):
    """What this page asks of the service (``app.service.Service``)."""

    @property
    def local_node(self) -> str | None: ...

    def live_timers(self) -> Sequence[Timer]: ...


def active_page(
    service: LocalTimers, filters: TimerFilter, limit: int, cursor: str | None
) -> Page[TimerPublic] | None:
    """The active timers matching the list's filters, from the engine; None when the
    engine cannot answer for them."""
    local = service.local_node
    if local is None or filters.node not in (None, local):
        return None
    below = int(cursor) if cursor is not None else None
    views = [
        view
        for view in service.live_timers()
        if filters.matches(view) and (below is None or view.id < below)
    ]
    views.sort(key=lambda view: view.id, reverse=True)
    items = [TimerPublic.from_timer(view) for view in views[:limit]]
    more = len(views) > limit
    return Page[TimerPublic](items=items, next=str(items[-1].id) if more else None)
