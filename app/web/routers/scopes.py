"""``/scopes``: how long each job's scopes are held, the timeout that suggests, and
what a proposed timeout would have done to the recorded history (contract 12).

A job is its id and its owner (contract 8): each item names its ``uid``, and ``?uid=``
chooses one owner's, as for ``GET /jobs/{id}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from app.access.callers import CallerDep
from app.db import job_store, scope_stats
from app.db.job_models import job_owner
from app.db.models import MAX_DEADLINE_SECONDS, MAX_SCOPE_LENGTH, ErrorMessage
from app.db.pagination import KnownQueryOnly
from app.deps import ServiceDep, SessionDep
from app.web.routers.jobs import OwnerQuery
from timer_core.engine.labels import MAX_JOB_ID_LENGTH

__all__ = ["router"]

router = APIRouter(prefix="/scopes", tags=["scopes"])

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorMessage, "description": "The database cannot be read now"}
}
_SEVERAL: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorMessage,
        "description": "Several users' jobs carry this id: say whose with ?uid=",
    },
    **_UNAVAILABLE,
}

JobQuery = Annotated[
    str | None, Query(max_length=MAX_JOB_ID_LENGTH, description="torchrun's run id")
]


def _invalid(name: str, message: str) -> HTTPException:
    return HTTPException(
        422, detail=[{"loc": ["query", name], "msg": message, "type": "value_error"}]
    )


@router.get("", responses=_UNAVAILABLE)
def list_scopes(
    service: ServiceDep,
    session: SessionDep,
    _known: KnownQueryOnly,
    job: JobQuery = None,
    uid: OwnerQuery = None,
    scope: Annotated[str | None, Query(max_length=MAX_SCOPE_LENGTH)] = None,
    window: Annotated[int, Query(ge=1, le=scope_stats.MAX_WINDOW)] = scope_stats.DEFAULT_WINDOW,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=job_store.JOB_CURSOR_PATTERN)] = None,
) -> scope_stats.ScopeList:
    """Per job (of each owner, or of ``uid`` only) and scope, over its last ``window``
    holds of released timers (seconds): the percentiles, the longest, and
    ``suggested_timeout`` = max(--auto-floor, 3 x p99, 1.5 x max), the timeout
    ``"expires_in": "auto"`` arms with. Scopes released most recently first, at most
    ``limit``. Without ``job``: the scopes of the 100 jobs active most recently; pass
    ``next`` back as ``cursor`` for the jobs active before them."""
    if cursor is not None and job is not None:
        raise _invalid("cursor", "a cursor pages through jobs: pass either job= or cursor=")
    try:
        return scope_stats.scope_stats(
            session.connection(),
            job,
            uid,
            scope,
            window,
            service.settings.auto_floor,
            limit,
            cursor,
        )
    except job_store.BadCursor as error:
        raise _invalid("cursor", str(error)) from None


@router.get("/whatif", responses=_SEVERAL)
def what_if(
    session: SessionDep,
    caller: CallerDep,
    _known: KnownQueryOnly,
    scope: Annotated[str, Query(min_length=1, max_length=MAX_SCOPE_LENGTH)],
    timeout: Annotated[
        float, Query(gt=0, le=MAX_DEADLINE_SECONDS, allow_inf_nan=False, description="seconds")
    ],
    job: JobQuery = None,
    uid: OwnerQuery = None,
    window: Annotated[int, Query(ge=1, le=scope_stats.MAX_WINDOW)] = scope_stats.MAX_WINDOW,
) -> scope_stats.WhatIf:
    """Replay ``timeout`` over the last ``window`` healthy holds of ``scope`` in
    ``job`` (required) and the hangs since: how many healthy holds it would have
    killed, and how many hangs (timers that expired or were killed) it would have
    caught, how much sooner in all. The job of ``uid``; without it, the caller's own
    job of that id if it has one, else the only one; 409 when several users' jobs
    carry the id."""
    if job is None:
        raise _invalid(
            "job",
            "pass job=<torchrun's run id> (GET /jobs lists them, GET /scopes?job= their"
            " scopes): a what-if replays one job's scope",
        )
    try:
        owner = job_store.job_owner_for(session, job, uid, caller.uid)
    except job_store.SeveralOwners as error:
        raise HTTPException(409, detail=str(error)) from None
    if owner is None:  # no such job (of that owner): nothing recorded to replay
        owner = uid if uid is not None else job_owner(caller.uid)
    return scope_stats.what_if(session.connection(), job, owner, scope, timeout, window)
