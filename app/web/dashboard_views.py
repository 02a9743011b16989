"""What the dashboard keeps in memory, built once by the composition root
(``app.main``): this service's live feed, fed the engine's events, and its view of
the fleet sharing the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.web.fleet_view import Fleet
from app.web.live_feed import LiveFeed

__all__ = ["DashboardViews", "ViewsDep", "get_views"]


@dataclass(frozen=True, slots=True)
class DashboardViews:
    live_feed: LiveFeed
    fleet: Fleet


async def get_views(request: Request) -> DashboardViews:
    # async: a sync dependency would cost a thread-pool hop on every poll.
    views: DashboardViews = request.app.state.views
    return views


ViewsDep = Annotated[DashboardViews, Depends(get_views)]
