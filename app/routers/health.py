"""``/healthz``: is the reaper alive and on time, and is the recorder keeping up."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import ServiceDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    responses={
        200: {"description": "ok, or degraded (recording trouble; kills go on)"},
        503: {
            "description": "failing: the reaper is not running or has stalled, or kills are overdue"
        },
    },
)
def healthz(service: ServiceDep) -> JSONResponse:
    health = service.health()
    return JSONResponse(health.to_json(), status_code=health.http_status)
