"""``/jobs``: the jobs the labelled timers belong to, newest activity first, and one
job with the latest timer of each of its ranks (contract 8)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from app.access.callers import CallerDep
from app.db import job_store
from app.db.job_models import JobDetail, JobPublic, JobRank, job_owner
from app.db.models import ErrorMessage, Page
from app.db.pagination import KnownQueryOnly
from app.deps import ServiceDep, SessionDep
from timer_core.engine.labels import MAX_JOB_ID_LENGTH

__all__ = ["OwnerQuery", "router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorMessage, "description": "No such job (of that owner)"},
    409: {
        "model": ErrorMessage,
        "description": "Several users' jobs carry this id: say whose with ?uid=",
    },
}


class RankSlowdown(JobRank):
    # Contract 12: the rank's median hold over the other ranks' at the scope where it
    # is slowest (app.ops.stragglers), as this node has seen it; null when unknown.
    slowdown: float | None = None


class JobSlowdowns(JobDetail):
    ranks: list[RankSlowdown]  # type: ignore[assignment]


# A job's owner: a uid (32-bit), or -1 for workers whose uid is unknown.
OwnerQuery = Annotated[int | None, Query(ge=-1, lt=2**32)]


@router.get("")
def list_jobs(
    session: SessionDep,
    _known: KnownQueryOnly,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=job_store.JOB_CURSOR_PATTERN)] = None,
) -> Page[JobPublic]:
    """Newest activity first. Pass ``next`` back as ``cursor`` for the following page."""
    try:
        items, after = job_store.jobs_page(session, limit, cursor)
    except job_store.BadCursor as error:
        raise HTTPException(
            422, detail=[{"loc": ["query", "cursor"], "msg": str(error), "type": "value_error"}]
        ) from None
    return Page[JobPublic](items=items, next=after)


# ``:path``: a job id is any string torchrun was given, slashes included.
@router.get("/{job_id:path}", responses=_NOT_FOUND)
def get_job(
    job_id: Annotated[str, Path(max_length=MAX_JOB_ID_LENGTH)],
    session: SessionDep,
    caller: CallerDep,
    service: ServiceDep,
    _known: KnownQueryOnly,
    uid: OwnerQuery = None,
) -> JobSlowdowns:
    """The job, with ``ranks``: the latest timer of each rank. A job is its id and its
    owner (``uid``): without ``?uid=``, the caller's own job of that id if it has one,
    else the only one; 409 when several users' jobs carry the id."""
    try:
        detail = job_store.find_job(session, job_id, uid, caller.uid)
    except job_store.SeveralOwners as error:
        raise HTTPException(409, detail=str(error)) from None
    if detail is None:
        whose = "" if uid is None else f" of uid {uid}"
        raise HTTPException(404, detail=f"no job {job_id!r}{whose}")
    slowdowns = service.stragglers.slowdowns(detail.job_id, job_owner(detail.uid))
    ranks = [
        RankSlowdown(**rank.model_dump(), slowdown=slowdowns.get(rank.rank))
        if rank.rank is not None
        else RankSlowdown(**rank.model_dump())
        for rank in detail.ranks
    ]
    return JobSlowdowns(**detail.model_dump(exclude={"ranks"}), ranks=ranks)
