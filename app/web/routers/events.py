"""``/events``: the event log, newest first; or, with ``after``, the events recorded
after one the client has seen, oldest first (how ``timer-service events --follow``
tails it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlmodel import col

from app.db import store
from app.db.enum_fields import EventKindField
from app.db.models import Event, EventPublic, Page
from app.db.pagination import (
    CURSOR_PATTERN,
    KnownQueryOnly,
    OptionalIntQuery,
    paginate,
    read_page,
)
from app.deps import SessionDep

__all__ = ["router"]

router = APIRouter(prefix="/events", tags=["events"])

_INT64_MAX = 2**63 - 1


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
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=_INT64_MAX,
            description="Only the events after the one of this id, oldest first; "
            "``next`` is then the ``after`` of the following page (null: none newer yet)",
        ),
    ] = None,
) -> Page[EventPublic]:
    """Newest first. Pass ``next`` back as ``cursor`` for the following page. With
    ``after``, oldest first from just after that event: pass ``next`` back as
    ``after``."""
    if after is not None and cursor is not None:
        # Two directions at once: say so, rather than answer one of them.
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["query", "cursor"],
                    "msg": "give cursor (older pages, newest first) or after (newer "
                    "events, oldest first), not both",
                    "type": "value_error",
                }
            ],
        )
    query = store.events_query(timer_id, kind, node, after)
    if after is not None:
        # Oldest first: ``next`` is then the ``after`` of the following page.
        return read_page(session, query.order_by(col(Event.id)), EventPublic, limit)
    return paginate(session, query, Event.id, EventPublic, limit, cursor)
