"""The jobs and incidents pages: ``/ui/jobs/{job_id}``, a grid of a job's ranks with
its incidents, and ``/ui/incidents/{id}``, an incident's groups with the suspects
marked. Rendered server-side from ``job_views``; an unknown job or incident gets the
page saying so, with a 404."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.access.callers import CallerDep
from app.db.job_store import SeveralOwners
from app.db.pagination import TimerIdPath
from app.deps import SessionDep
from app.web.job_views import incident_view, job_view
from app.web.page_templates import render_page
from app.web.routers.jobs import OwnerQuery

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
    uid: OwnerQuery = None,
) -> HTMLResponse:
    try:
        view = job_view(session, caller, job_id, uid)
    except SeveralOwners as several:
        page = render_page(
            request, "job", False, time.time(), job_id=job_id, view=None, owners=several.owners
        )
        page.status_code = 409
        return page
    return render_page(
        request, "job", view is not None, time.time(), job_id=job_id, view=view, owners=[]
    )


@router.get("/ui/incidents/{incident_id}", response_class=HTMLResponse, include_in_schema=False)
def incident_page(
    request: Request, incident_id: TimerIdPath, session: SessionDep, caller: CallerDep
) -> HTMLResponse:
    view = incident_view(session, caller, incident_id)
    return render_page(
        request, "incident", view is not None, time.time(), incident_id=incident_id, view=view
    )
