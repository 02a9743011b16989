"""``/incidents``: the hangs of jobs, each rank's stack grouped and the suspects named
(contract 8). Frames and summaries are read off other users' stacks, so they are shown
only to who may read every one of them (``incident_privacy``); a rank's own stack only
to who may read it, as ``GET /timers/{id}/stack``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from app.access.callers import CallerDep, authorize, forbidden
from app.access.incident_privacy import visible
from app.access.kernel_stacks import stack_for
from app.db import job_store, store
from app.db.job_models import IncidentPublic
from app.db.models import ErrorMessage, Page
from app.db.pagination import CURSOR_PATTERN, KnownQueryOnly, TimerIdPath
from app.deps import ServiceDep, SessionDep
from timer_core.engine.arm_request import ArmRequest, Origin
from timer_core.engine.labels import MAX_JOB_ID_LENGTH

__all__ = ["router"]

router = APIRouter(prefix="/incidents", tags=["incidents"])


def _json_error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}},
    }


@router.get("")
def list_incidents(
    session: SessionDep,
    caller: CallerDep,
    _known: KnownQueryOnly,
    job: Annotated[str | None, Query(max_length=MAX_JOB_ID_LENGTH)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Page[IncidentPublic]:
    """Newest first, of one job with ``job=``. Pass ``next`` back as ``cursor``."""
    rows, after = job_store.incidents_page(session, job, limit, cursor)
    return Page[IncidentPublic](items=[visible(caller, row) for row in rows], next=after)


@router.get(
    "/{incident_id}",
    responses={404: {"model": ErrorMessage, "description": "No such incident"}},
)
def get_incident(
    incident_id: TimerIdPath, session: SessionDep, caller: CallerDep, _known: KnownQueryOnly
) -> IncidentPublic:
    """The incident: its ranks, their groups with frames, the suspects and a summary."""
    row = job_store.incident(session, incident_id)
    if row is None:
        raise HTTPException(404, detail=f"no incident {incident_id}")
    return visible(caller, row)


@router.get(
    "/{incident_id}/captures/{capture_id}/stack",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "The rank's stack, as text"},
        403: _json_error("The caller may not read this rank's stack"),
        404: _json_error("No such capture, or no stack was captured for it"),
    },
)
def get_capture_stack(
    incident_id: TimerIdPath,
    capture_id: TimerIdPath,
    session: SessionDep,
    service: ServiceDep,
    caller: CallerDep,
    _known: KnownQueryOnly,
) -> PlainTextResponse:
    """One rank's stack as the incident captured it; ``X-Stack-Method`` says how. Only
    the worker's own user (and root, the service's user, the admin token) may read it;
    the kernel stack of a ``proc`` report only root and the service's user."""
    row = job_store.capture(session, incident_id, capture_id)
    if row is None:
        raise HTTPException(404, detail=f"incident {incident_id} has no capture {capture_id}")
    action = f"read the stack of capture {capture_id} of incident {incident_id}"
    refusal = authorize(caller, row.uid, action)
    if refusal is not None:
        # Logged as any refusal is, under the timer the rank had when captured.
        timer = store.timer(session, row.timer_id) if row.timer_id is not None else None
        service.refused(
            ArmRequest(
                row.pid,
                timer.scope_id if timer else f"incident {incident_id}",
                -1,
                timer.signal if timer else 0,
            ),
            Origin("http", caller.uid, caller.describe()),
            refusal,
        )
        raise forbidden(refusal)
    if row.stack_text is None:
        raise HTTPException(
            404, detail=f"no stack was captured for capture {capture_id}: {row.stack_note or '?'}"
        )
    text, kernel = stack_for(caller, row.stack_method, row.stack_text)
    return PlainTextResponse(text, headers={"X-Stack-Method": row.stack_method or "", **kernel})
