"""``/scopes``: how long each job's scopes are held, the timeout that suggests, and
what a proposed timeout would have done to the recorded history (contract 12)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.db import scope_stats
from app.db.models import MAX_DEADLINE_SECONDS, MAX_SCOPE_LENGTH, ErrorMessage
from app.db.pagination import KnownQueryOnly
from app.deps import ServiceDep, SessionDep
from timer_core.engine.labels import MAX_JOB_ID_LENGTH

__all__ = ["router"]

router = APIRouter(prefix="/scopes", tags=["scopes"])

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorMessage, "description": "The database cannot be read now"}
}

JobQuery = Annotated[
    str | None, Query(max_length=MAX_JOB_ID_LENGTH, description="torchrun's run id")
]


@router.get("", responses=_UNAVAILABLE)
def list_scopes(
    service: ServiceDep,
    session: SessionDep,
    _known: KnownQueryOnly,
    job: JobQuery = None,
    scope: Annotated[str | None, Query(max_length=MAX_SCOPE_LENGTH)] = None,
    window: Annotated[int, Query(ge=1, le=scope_stats.MAX_WINDOW)] = scope_stats.DEFAULT_WINDOW,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> scope_stats.ScopeList:
    """Per job and scope, over its last ``window`` holds of released timers (seconds):
    the percentiles, the longest, and ``suggested_timeout`` = max(--auto-floor, 3 x p99,
    1.5 x max), the timeout ``"expires_in": "auto"`` arms with. Scopes released most
    recently first, at most ``limit``."""
    items = scope_stats.scope_stats(
        session.connection(), job, scope, window, service.settings.auto_floor, limit
    )
    return scope_stats.ScopeList(items=items)


@router.get("/whatif", responses=_UNAVAILABLE)
def what_if(
    session: SessionDep,
    _known: KnownQueryOnly,
    scope: Annotated[str, Query(min_length=1, max_length=MAX_SCOPE_LENGTH)],
    timeout: Annotated[
        float, Query(gt=0, le=MAX_DEADLINE_SECONDS, allow_inf_nan=False, description="seconds")
    ],
    job: JobQuery = None,
    window: Annotated[int, Query(ge=1, le=scope_stats.MAX_WINDOW)] = scope_stats.MAX_WINDOW,
) -> scope_stats.WhatIf:
    """Replay ``timeout`` over the last ``window`` healthy holds of ``scope`` (in
    ``job``, or in every job) and the hangs since: how many healthy holds it would have
    killed, and how many hangs (timers that expired or were killed) it would have
    caught, how much sooner in all."""
    return scope_stats.what_if(session.connection(), job, scope, timeout, window)
