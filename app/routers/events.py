"""``/events``: the event log, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, select

from ..deps import SessionDep
from ..models import Event, EventPublic, Page

__all__ = ["router"]

router = APIRouter(prefix="/events", tags=["events"])


@router.get("")
def list_events(
    session: SessionDep,
    timer_id: int | None = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
) -> Page[EventPublic]:
    """Newest first. Pass ``next`` back as ``cursor`` for the following page."""
    query = select(Event).order_by(col(Event.id).desc()).limit(limit + 1)
    if timer_id is not None:
        query = query.where(Event.timer_id == timer_id)
    if kind is not None:
        query = query.where(Event.kind == kind)
    if cursor is not None:
        query = query.where(col(Event.id) < int(cursor))
    rows = session.exec(query).all()
    items = [EventPublic.model_validate(row, from_attributes=True) for row in rows[:limit]]
    more = len(rows) > limit
    return Page[EventPublic](items=items, next=str(items[-1].id) if more else None)
