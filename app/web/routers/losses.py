"""``/losses``: events the service knows it lost, and their acknowledgement.

``/healthz`` stays ``degraded`` while a loss is unacknowledged, across restarts: an
operator looks (``GET /losses``), deals with it, and acknowledges it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from app.access.callers import CallerDep, forbidden, is_privileged
from app.db.database_status import one_line
from app.db.models import ErrorMessage
from app.deps import ServiceDep, require_database, require_token

__all__ = ["LossPublic", "Losses", "router"]

router = APIRouter(prefix="/losses", tags=["health"])

Write = Annotated[None, Depends(require_token)]


class LossPublic(BaseModel):
    id: int
    at: float
    kind: str
    count: int
    detail: str
    acknowledged_at: float | None
    acknowledged_by: str | None


class Losses(BaseModel):
    unacknowledged: int
    items: list[LossPublic]


class Acknowledged(BaseModel):
    acknowledged: int


@router.get("")
def list_losses(service: ServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Losses:
    """The losses recorded, newest first, and how many events are not acknowledged."""
    require_database(service)
    rows = service.losses.rows(limit)
    return Losses(
        unacknowledged=service.losses.unacknowledged(),
        items=[LossPublic.model_validate(row, from_attributes=True) for row in rows],
    )


@router.post(
    "/acknowledge",
    responses={
        401: {"model": ErrorMessage, "description": "Missing or wrong bearer token"},
        403: {
            "model": ErrorMessage,
            "description": "Only root, the service's user or the admin token may acknowledge",
        },
        503: {"model": ErrorMessage, "description": "The database cannot be written now"},
    },
)
def acknowledge_losses(service: ServiceDep, caller: CallerDep, _: Write) -> Acknowledged:
    """Mark every loss so far as seen: ``/healthz`` no longer reports them."""
    if not is_privileged(caller):
        raise forbidden(
            f"{caller.describe()} may not acknowledge lost events: only root, the "
            "service's user or the admin token may"
        )
    try:
        return Acknowledged(acknowledged=service.losses.acknowledge(caller.describe()))
    except SQLAlchemyError as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            # The driver's message in one line, not SQLAlchemy's with the statement.
            detail=f"cannot write the database: {one_line(error)}; retry once it is back",
        ) from None
