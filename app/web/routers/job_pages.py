"""The jobs and incidents pages: ``/ui/jobs/{job_id}``, a grid of a job's ranks with
its incidents, and ``/ui/incidents/{id}``, an incident's groups with the suspects
marked. Rendered server-side from ``job_views``; an unknown job or incident gets the
page saying so, with a 404."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.access.callers import CallerDep
from app.db.job_models import job_owner
from app.db.job_store import SeveralOwners
from app.db.models import MAX_DEADLINE_SECONDS, MAX_SCOPE_LENGTH
from app.db.pagination import TimerIdPath
from app.deps import ServiceDep, SessionDep
from app.web.job_views import incident_view, job_view
from app.web.page_templates import render_page
from app.web.routers.jobs import OwnerQuery
from app.web.scope_views import scopes_view

__all__ = ["router"]

router = APIRouter(tags=["dashboard"])


# ``:path``: a job id is any string torchrun was given, slashes included.
# ``?uid=``: whose job, as for GET /jobs/{job_id}; without it, the caller's own job of
# that id, else the only one, else (409) a list of the owners to choose from.
@router.get("/ui/jobs/{job_id:path}", response_class=HTMLResponse, include_in_schema=False)
def job_page(
    request: Request,
    job_id: str,
    session: SessionDep,
    caller: CallerDep,
    service: ServiceDep,
    uid: OwnerQuery = None,
    whatif_scope: Annotated[str | None, Query(max_length=MAX_SCOPE_LENGTH)] = None,
    whatif_timeout: Annotated[
        float | None, Query(gt=0, le=MAX_DEADLINE_SECONDS, allow_inf_nan=False)
    ] = None,
) -> HTMLResponse:
    try:
        view = job_view(session, caller, job_id, uid)
    except SeveralOwners as several:
        page = render_page(
            request, "job", False, time.time(), job_id=job_id, view=None, owners=several.owners
        )
        page.status_code = 409
        return page
    scopes = None
    if view is not None:
        owner = job_owner(view["job"]["uid"])
        # Each rank's slowdown (contract 12), as GET /jobs/{id} shows it: this owner's.
        slowdowns = service.stragglers.slowdowns(job_id, owner)
        for rank in view["job"]["ranks"]:
            rank["slowdown"] = slowdowns.get(rank["rank"])
        # The scopes' hold times of this owner's job, and the what-if its form asks for
        # (GET /scopes/whatif).
        scopes = scopes_view(
            session.connection(),
            job_id,
            owner,
            service.settings.auto_floor,
            whatif_scope,
            whatif_timeout,
        )
    return render_page(
        request,
        "job",
        view is not None,
        time.time(),
        job_id=job_id,
        view=view,
        owners=[],
        scopes=scopes,
        straggler_ratio=service.stragglers.ratio,
    )


@router.get("/ui/incidents/{incident_id}", response_class=HTMLResponse, include_in_schema=False)
def incident_page(
    request: Request, incident_id: TimerIdPath, session: SessionDep, caller: CallerDep
) -> HTMLResponse:
    view = incident_view(session, caller, incident_id)
    return render_page(
        request, "incident", view is not None, time.time(), incident_id=incident_id, view=view
    )
