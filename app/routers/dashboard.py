"""The live dashboard: pages rendered with Jinja2, kept live by polling one JSON state."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from timer_core import TimerView

from ..deps import ServiceDep
from .health import health_report
from .pagination import OptionalIntQuery, TimerIdPath

__all__ = ["STATIC_DIR", "router"]

# Package data: found beside the code wherever the package is installed.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
STATIC_DIR = PACKAGE_DIR / "static"
templates = Jinja2Templates(directory=PACKAGE_DIR / "templates")

router = APIRouter(tags=["dashboard"])

# The page shows the soonest-expiring timers first; beyond this many it says how many more.
_ACTIVE_SHOWN = 500

StateFilter = Annotated[str | None, Query(pattern="^(active|released|expired|killed)$")]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "dashboard.html", {"page": "dashboard"})


@router.get("/ui/timers/{timer_id}", response_class=HTMLResponse, include_in_schema=False)
def timer_page(request: Request, timer_id: TimerIdPath) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "timer.html", {"page": "timer", "timer_id": timer_id}
    )


@router.get("/dashboard/state")
def dashboard_state(
    service: ServiceDep,
    pid: OptionalIntQuery = None,
    scope: Annotated[str | None, Query(max_length=1024)] = None,
    state: StateFilter = None,
) -> dict[str, Any]:
    """Everything the dashboard shows, filtered as its URL says (``scope`` is a substring)."""
    now = time.time()
    _, health = health_report(service)
    feed = service.live_feed.snapshot(now)
    reaper = service.reaper
    active: list[TimerView] = []
    active_total = 0
    if reaper is not None and state in (None, "active"):
        active, active_total = reaper.soonest(_ACTIVE_SHOWN, pid=pid, scope_contains=scope)

    def wanted(timer: dict[str, Any]) -> bool:
        return (
            (pid is None or timer["pid"] == pid)
            and (scope is None or scope in timer["scope_id"])
            and (state is None or timer["state"] == state)
        )

    return {
        "now": now,
        "health": {
            "status": health["status"],
            "problems": health["problems"],
            "reaper_lag_seconds": health["reaper"]["lag_seconds"],
            "recorder_backlog": health["recorder"]["backlog"],
        },
        "counts": {
            "active": reaper.active_count() if reaper is not None else 0,
            "expired_last_hour": feed["expired_last_hour"],
            "killed_last_hour": feed["killed_last_hour"],
            "kills_total": feed["kills_total"],
        },
        "active": [asdict(timer) for timer in active],
        "active_hidden": max(0, active_total - len(active)),
        "recent_ends": [row for row in feed["recent_ends"] if wanted(row)][:100],
        "chart": feed["chart"],
    }
