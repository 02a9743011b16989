"""``/silences`` (contract 11): maintenance windows that hold back the notifications
they match, recorded as ``silenced``. A user may silence its own uid's work (the
match is given the caller's uid, as the kernel tells it); the admin anything."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from app.access.callers import Caller, CallerDep, forbidden, is_privileged
from app.db.models import ErrorMessage, Page
from app.deps import JsonBody, ServiceDep, require_database, require_token
from app.notify import silences
from app.notify.silences import SilenceCreate, SilencePublic, TooManySilences, seen_by

__all__ = ["router"]

router = APIRouter(prefix="/silences", tags=["notifications"])

Write = Annotated[None, Depends(require_token)]
SilenceId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "Missing or wrong bearer token"},
    403: {"model": ErrorMessage, "description": "Not your uid's work to silence"},
    429: {"model": ErrorMessage, "description": "Too many silences not ended (per uid, or all)"},
    503: {"model": ErrorMessage, "description": "The database is away: retry once it is back"},
}
_JSON_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "The body is not valid JSON"},
    415: {
        "model": ErrorMessage,
        "description": "The body is not sent as JSON (content-type: application/json)",
    },
}


def _own_match(given: SilenceCreate, caller: Caller) -> SilenceCreate:
    """``given`` as ``caller`` may make it: the admin's as it is; a user's limited to
    its own uid (named, or given), anything else refused."""
    if is_privileged(caller):
        return given
    if caller.uid is None:
        raise forbidden(
            f"{caller.describe()} may not add a silence: the service cannot tell who you "
            "are; connect over loopback TCP or the Unix socket (--uds), or send the admin token"
        )
    if given.match.uid is not None and given.match.uid != caller.uid:
        raise forbidden(
            f"{caller.describe()} may not silence uid {given.match.uid}'s work: a user may "
            "silence only its own (leave match.uid out, or give your own)"
        )
    return given.model_copy(update={"match": given.match.model_copy(update={"uid": caller.uid})})


@router.post("", status_code=status.HTTP_201_CREATED, responses=_ERRORS | _JSON_BODY)
def create_silence(
    given: SilenceCreate, service: ServiceDep, caller: CallerDep, _: Write, _json: JsonBody
) -> SilencePublic:
    """Hold back, from ``starts_at`` (default now) to ``ends_at`` (unix seconds), the
    notifications that match: by ``job``, ``node``, ``uid`` or ``scope_prefix``."""
    require_database(service)
    try:
        return silences.add_silence(service.engine, _own_match(given, caller), caller.describe())
    except TooManySilences as error:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(error)) from None


@router.get("", responses={503: _ERRORS[503]})
def list_silences(
    service: ServiceDep,
    caller: CallerDep,
    ended: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[SilencePublic]:
    """The silences in force or to come, newest first (``ended=true``: those over too).
    A user's comment is shown only to who may read that uid's work."""
    require_database(service)
    items = silences.silences(service.engine, limit, ended)
    return Page[SilencePublic](items=[seen_by(caller, item) for item in items], next=None)


@router.delete(
    "/{silence_id}",
    responses=_ERRORS | {404: {"model": ErrorMessage, "description": "No such silence"}},
)
def delete_silence(
    silence_id: SilenceId, service: ServiceDep, caller: CallerDep, _: Write
) -> SilencePublic:
    """End a silence now: its owner (the uid it mutes) or the admin."""
    require_database(service)
    row = silences.silence_row(service.engine, silence_id)
    if row is None:
        raise HTTPException(404, detail=f"no silence {silence_id}")
    if not is_privileged(caller) and (caller.uid is None or caller.uid != row.uid):
        raise forbidden(
            f"{caller.describe()} may not delete silence {silence_id}: only the user it "
            "silences, root, the service's user or the admin token may"
        )
    deleted = silences.delete_silence(service.engine, silence_id)
    if deleted is None:
        raise HTTPException(404, detail=f"no silence {silence_id}")
    return deleted
