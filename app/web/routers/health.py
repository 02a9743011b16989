"""``/healthz``: is the reaper alive and on time, and is the recorder keeping up."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import ServiceDep

__all__ = ["router"]

router = APIRouter(tags=["health"])

# /healthz's own threads. A sync route would queue behind every other request for the
# shared thread pool (40 threads): under a flood of big reads, health timed out for two
# minutes. Health reads no database, so two threads of its own always answer it (not the
# event loop: a lock held briefly elsewhere must not stall every connection).
_HEALTH_THREADS = anyio.CapacityLimiter(2)


@router.get(
    "/healthz",
    responses={
        200: {"description": "ok, or degraded (recording trouble; kills go on)"},
        503: {
            "description": "failing: the reaper is not running or has stalled, or kills are overdue"
        },
    },
)
async def healthz(service: ServiceDep) -> JSONResponse:
    health = await anyio.to_thread.run_sync(service.health, limiter=_HEALTH_THREADS)
    return JSONResponse(health.to_json(), status_code=health.http_status)
