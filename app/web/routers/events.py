"""``/events``: the event log, newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Query

from app.db import store
from app.db.models import Event, EventPublic, Page
from app.db.pagination import CURSOR_PATTERN, KnownQueryOnly, OptionalIntQuery, paginate
from app.deps import SessionDep
from timer_core.engine import EVENT_KINDS

__all__ = ["EventKindName", "router"]

router = APIRouter(prefix="/events", tags=["events"])

if TYPE_CHECKING:
    EventKindName = str
else:
    # The engine's own list of kinds, as a Literal: an unknown kind gets a 422 that
    # names the known ones, and the OpenAPI schema lists them. (A Literal built at
    # run time is opaque to mypy, which sees a str.)
    EventKindName = Literal[EVENT_KINDS]


@router.get("")
def list_events(
    session: SessionDep,
    _known: KnownQueryOnly,
    timer_id: OptionalIntQuery = None,
    kind: Annotated[EventKindName | None, Query()] = None,
    node: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Page[EventPublic]:
    """Newest first. Pass ``next`` back as ``cursor`` for the following page."""
    query = store.events_query(timer_id, kind, node)
    return paginate(session, query, Event.id, EventPublic, limit, cursor)
