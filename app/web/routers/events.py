"""``/events``: the event log, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.db import store
from app.db.enum_fields import EventKindField
from app.db.models import Event, EventPublic, Page
from app.db.pagination import CURSOR_PATTERN, KnownQueryOnly, OptionalIntQuery, paginate
from app.deps import SessionDep

__all__ = ["router"]

router = APIRouter(prefix="/events", tags=["events"])


@router.get("")
def list_events(
    session: SessionDep,
    _known: KnownQueryOnly,
    timer_id: OptionalIntQuery = None,
    # An unknown kind gets a 422 that names the known ones (the OpenAPI enum).
    kind: Annotated[EventKindField | None, Query()] = None,
    node: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Page[EventPublic]:
    """Newest first. Pass ``next`` back as ``cursor`` for the following page."""
    query = store.events_query(timer_id, kind, node)
    return paginate(session, query, Event.id, EventPublic, limit, cursor)
