"""``/fifos``: the caller's own FIFO in ``--fifo-dir``, for torch's FileTimerClient.

A job that does not run as the service's user cannot write to the shared ``--fifo``
(0600, the service's own). It asks here for a FIFO of its own: ``DIR/<uid>``, owned by
its uid, from which requests may only target that uid's processes. The uid is the one
the kernel reports for the connection (contract 7), never one the request names.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel, Field

from app.access.callers import CallerDep, forbidden
from app.db.models import ErrorMessage
from app.deps import ServiceDep, require_token
from timer_core.sources import FifoDirError

__all__ = ["FifoPublic", "router"]

router = APIRouter(prefix="/fifos", tags=["fifos"])

Write = Annotated[None, Depends(require_token)]


class FifoPublic(BaseModel):
    path: str = Field(
        description="The caller's FIFO: pass it to FileTimerClient, or set it as "
        "TORCHELASTIC_TIMER_FILE for a torchrun job."
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": FifoPublic, "description": "The caller's FIFO already existed"},
        401: {"model": ErrorMessage, "description": "Missing or wrong bearer token"},
        403: {"model": ErrorMessage, "description": "The service cannot tell who the caller is"},
        409: {"model": ErrorMessage, "description": "The service keeps no per-user FIFOs"},
        503: {"model": ErrorMessage, "description": "The FIFO could not be made"},
    },
)
def make_fifo(service: ServiceDep, caller: CallerDep, response: Response, _: Write) -> FifoPublic:
    """Make (or return) the FIFO of the caller's own uid: 201 when made now, 200 when it
    existed. Sync on purpose: it touches the file system, so it runs off the loop."""
    if caller.uid is None:
        raise forbidden(
            f"the service cannot tell who you are ({caller.describe()}): connect over "
            "loopback or the Unix socket"
        )
    fifos = service.user_fifos
    if fifos is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="this service keeps no per-user FIFOs: start the service with --fifo-dir",
        )
    try:
        path, made = fifos.ensure(caller.uid)
    except FifoDirError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    except OSError as error:  # e.g. a full disk: the service's trouble, not the caller's
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"cannot make the FIFO: {error}"
        ) from None
    if not made:
        response.status_code = status.HTTP_200_OK
    return FifoPublic(path=path)
