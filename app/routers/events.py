"""``/events``: the event log, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import select

from ..deps import SessionDep
from ..models import Event, EventPublic, Page
from .pagination import CURSOR_PATTERN, OptionalIntQuery, paginate

__all__ = ["router"]

router = APIRouter(prefix="/events", tags=["events"])


@router.get("")
def list_events(
    session: SessionDep,
    timer_id: OptionalIntQuery = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Page[EventPublic]:
    """Newest first. Pass ``next`` back as ``cursor`` for the following page."""
    query = select(Event)
    if timer_id is not None:
        query = query.where(Event.timer_id == timer_id)
    if kind is not None:
        query = query.where(Event.kind == kind)
    return paginate(session, query, Event.id, EventPublic, limit, cursor)
