"""``/healthz``: is the reaper alive and on time, and is the recorder keeping up."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import ServiceDep
from ..kill_metrics import kill_path_report
from ..service import Service

__all__ = ["health_report", "router"]

router = APIRouter(tags=["health"])


def health_report(service: Service) -> tuple[int, dict[str, Any]]:
    reaper = service.reaper
    problems: list[str] = []
    running = reaper is not None and reaper.is_running()
    since_loop = time.monotonic() - reaper.last_loop_monotonic if reaper is not None else None
    if not running:
        problems.append("the reaper thread is not running")
    elif since_loop is not None and since_loop > service.settings.reaper_stall_seconds:
        problems.append(f"the reaper loop has stalled for {since_loop:.1f}s")
    kills = kill_path_report(reaper)
    if kills.get("problem"):
        problems.append(kills["problem"])
    recorder = service.recorder
    degraded = [recorder.degraded_reason] if recorder.degraded_reason else []
    if kills.get("recent_error"):
        degraded.append(f"an error on the expiry path: {kills['recent_error']}")
    # From the database: a loss stays reported across restarts until acknowledged.
    lost = service.losses.problem()
    if lost:
        degraded.append(lost)
    # Descriptors near the limit, or connections shed to keep some for kills.
    descriptors = service.connections.status()
    degraded += service.connections.problems(descriptors)
    status = "failing" if problems else ("degraded" if degraded else "ok")
    body = {
        "status": status,
        "problems": problems + degraded,
        "pid": service.pid,
        "uptime_seconds": time.time() - service.started_at,
        "active_timers": reaper.active_count() if reaper is not None else 0,
        "reaper": {
            "running": running,
            "restarts": service.reaper_restarts,
            "seconds_since_loop": since_loop,
            "lag_seconds": reaper.last_lag_seconds if reaper is not None else None,
        },
        "recorder": {
            "backlog": recorder.backlog(),
            "dropped": recorder.dropped,
            "write_errors": recorder.write_errors,
            "last_error": recorder.degraded_reason,
            # Backpressure: events not yet committed, and how often intake paused.
            "behind": service.backpressure.outstanding(),
            "pauses": service.backpressure.pauses,
        },
        "kills": kills,
        "lost_events_unacknowledged": service.losses.unacknowledged(),
        "fifo": service.settings.fifo,
        "descriptors": descriptors,
    }
    # A reaper that is not reaping fails the check (a supervisor restarts us);
    # a recorder that cannot write is degraded but the kills go on.
    return (503 if problems else 200), body


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
    code, body = health_report(service)
    return JSONResponse(body, status_code=code)
