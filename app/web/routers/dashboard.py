"""The live dashboard: pages rendered server-side with the current state, then kept
live by polling the same state as JSON.

One function computes what each page shows (``collect_state`` for the dashboard,
``timer_details`` for a timer's page); the HTML routes render it and the JSON routes
return it, so the first paint and the live updates can never disagree. Every link
and asset URL is relative to the app's ``root_path``, never built from the Host
header, so the pages work behind a proxy under a prefix (``--root-path``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from app.access.callers import CallerDep
from app.db import store
from app.db.database_status import DATABASE_ERRORS
from app.db.models import TimerPublic
from app.db.nodes import NodeStatus
from app.db.pagination import TimerIdPath
from app.db.unencodable import renderable_rows
from app.deps import ServiceDep, SessionDep
from app.notify.silences import SilencePublic, seen_by, silences
from app.web.dashboard_text import describe_event, duration, stack_note
from app.web.dashboard_views import DashboardViews, ViewsDep
from app.web.fleet_view import node_rows
from app.web.job_views import overview
from app.web.live_feed import LiveFeed
from app.web.page_templates import STATIC_DIR, render_page, templates
from app.web.timer_incidents import incidents_of_timer
from app.web.unkillable_marks import unkillable_mark
from timer_core.engine import EventKind, ReadsThrottled, TimerState

__all__ = [
    "STATIC_DIR",
    "Filters",
    "collect_state",
    "router",
    "timer_details",
]

router = APIRouter(tags=["dashboard"])

# The page shows the soonest-expiring timers first; beyond this many it says how many more.
_ACTIVE_SHOWN = 500
# A timer heartbeating for days has many events; its page shows the newest this many.
_EVENTS_SHOWN = 1000
# The newest ends shown, and how many of other nodes' newest ends are read to find them
# (the window the live feed keeps of this node's). Kills have a list of their own, so
# releases (several a second) never push them out of view.
_ENDS_SHOWN = 100
_ENDS_READ = 200
_KILLS_SHOWN = 50
# Silences listed on the dashboard (newest first; GET /silences has them all).
_SILENCES_SHOWN = 20


# ---- filters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    pid: int | None = None
    scope: str | None = None  # a substring of the scope
    state: str | None = None
    node: str | None = None  # a node's name, exactly
    job: str | None = None  # a job's id, exactly


# Any state, or empty: the filter form sends every field (see below).
_STATE_PATTERN = f"^(|{'|'.join(TimerState)})$"


def _filters(
    pid: Annotated[str | None, Query(pattern=r"^[0-9]{0,18}$", description="A pid")] = None,
    scope: Annotated[
        str | None, Query(max_length=1024, description="A substring of the scope")
    ] = None,
    state: Annotated[str | None, Query(pattern=_STATE_PATTERN)] = None,
    node: Annotated[str | None, Query(max_length=256, description="A node's name")] = None,
    job: Annotated[str | None, Query(max_length=256, description="A job's id")] = None,
) -> Filters:
    # An empty value means no filter: the filter form, submitted with scripts off,
    # sends every field, empty or not.
    return Filters(
        pid=int(pid) if pid else None,
        scope=scope or None,
        state=state or None,
        node=node or None,
        job=job or None,
    )


FiltersDep = Annotated[Filters, Depends(_filters)]


# ---- what the pages show ------------------------------------------------------------------


def collect_state(service: ServiceDep, views: DashboardViews, filters: Filters) -> dict[str, Any]:
    """Everything the dashboard shows, filtered as its URL says: this node's timers from
    its engine and live feed, other nodes' (every node's, on a hub) from the database."""
    now = time.time()
    health = service.health()
    fleet = views.fleet
    # While the database is away the page shows what this node's engine and live feed
    # know, and says that history is unavailable (contract 14).
    away = health.database_problem
    statuses: list[NodeStatus] = []
    hub_feed: LiveFeed | None = None
    if away is None:
        try:
            statuses = fleet.nodes(health.active_timers)
            # A hub's engine sees no events: its counts and chart come from the database.
            hub_feed = fleet.hub_feed() if fleet.local is None else None
        except DATABASE_ERRORS as error:
            # Met before anything said so (a locked SQLite file, an outage's first
            # second): the page as during an outage, not a 503 instead of the page.
            away = service.database.read_failed(error)
    feed = (hub_feed if hub_feed is not None else views.live_feed).snapshot(now)
    others = away is None and fleet.has_others()
    local = fleet.local
    # The local engine's timers are wanted unless the filter names another node.
    want_local = local is not None and filters.node in (None, local)
    want_active = filters.state in (None, TimerState.ACTIVE)
    active: list[dict[str, Any]] = []
    active_total = 0
    if filters.job is not None and want_active:
        # Read for every node at once (fleet_view); the engine's reader has no job filter.
        if away is None:
            try:
                active, active_total = fleet.job_active(
                    filters.job, filters.node, filters.pid, filters.scope, _ACTIVE_SHOWN
                )
            except DATABASE_ERRORS as error:
                away = service.database.read_failed(error)
        if away is not None and want_local:
            active, active_total = _job_from_engine(service, filters)
    elif want_local and want_active:
        # Anyone may poll this: the reader scans a snapshot outside the reaper's lock,
        # shares scans between readers and keeps them within a CPU budget.
        try:
            soonest, active_total = service.soonest(
                _ACTIVE_SHOWN, pid=filters.pid, scope_contains=filters.scope
            )
        except ReadsThrottled as error:
            raise HTTPException(
                429,
                detail=f"{error}: the service limits how much time scans of its timers take",
                headers={"Retry-After": str(math.ceil(error.retry_after))},
            ) from None
        active = [TimerPublic.from_timer(timer).model_dump(mode="json") for timer in soonest]

    def wanted(timer: dict[str, Any]) -> bool:
        return (
            (filters.pid is None or timer["pid"] == filters.pid)
            and (filters.scope is None or filters.scope in timer["scope_id"])
            and (filters.state is None or timer["state"] == filters.state)
            and (filters.node is None or timer["node"] == filters.node)
            and (filters.job is None or timer["job_id"] == filters.job)
        )

    ends = [row for row in feed["recent_ends"] if wanted(row)]
    kills = [row for row in feed["recent_kills"] if wanted(row)]
    active_count = health.active_timers
    others = others and away is None
    if others:
        # The live feed was seeded with every node's ends, but only this engine's
        # events follow: it answers for this node, the database for the others.
        ends = [row for row in ends if want_local and row["node"] in (local, "")]
        kills = [row for row in kills if want_local and row["node"] in (local, "")]
        if filters.node != local or local is None:
            read = fleet.timers(
                filters.node, filters.pid, filters.scope, _ACTIVE_SHOWN, _ENDS_READ, _KILLS_SHOWN
            )
            if want_active and filters.job is None:
                active = sorted(active + read.active, key=_soonest)[:_ACTIVE_SHOWN]
                active_total += read.active_total
            ends = sorted(ends + [row for row in read.ends if wanted(row)], key=_newest)
            kills = sorted(kills + [row for row in read.kills if wanted(row)], key=_newest)
        active_count = sum(status.active_timers for status in statuses)

    return {
        "now": now,
        "node": local,
        "health": {
            "status": health.status,
            "problems": health.problems + health.degraded,
            "reaper_lag_seconds": health.reaper.lag_seconds,
            "recorder_backlog": health.recorder.backlog,
        },
        "counts": {
            "active": active_count,
            "expired_last_hour": feed["expired_last_hour"],
            "killed_last_hour": feed["killed_last_hour"],
            "kills_total": feed["kills_total"],
        },
        # Each row alone: one the page cannot encode is shown escaped, not a 500 for all.
        "active": renderable_rows(active, "timer"),
        "active_hidden": max(0, active_total - len(active)),
        # Every end, kills too (the API's view); the page lists the kills apart.
        "recent_ends": renderable_rows(ends[:_ENDS_SHOWN], "timer"),
        "recent_kills": renderable_rows(kills[:_KILLS_SHOWN], "timer"),
        "chart": feed["chart"],
        "nodes": node_rows(statuses),
        "history_unavailable": away,
    }


def _job_from_engine(service: ServiceDep, filters: Filters) -> tuple[list[dict[str, Any]], int]:
    """One job's active timers on this node while the database is away: from the
    engine, as ``GET /timers?state=active`` answers then (active_from_engine)."""
    match = store.TimerFilter(job=filters.job, pid=filters.pid)
    found = [
        TimerPublic.from_timer(timer).model_dump(mode="json")
        for timer in service.live_timers()
        if match.matches(timer) and (filters.scope is None or filters.scope in timer.scope_id)
    ]
    return sorted(found, key=_soonest)[:_ACTIVE_SHOWN], len(found)


def _soonest(timer: dict[str, Any]) -> tuple[float, int]:
    return (timer["expiration_time"], timer["id"])


def _newest(timer: dict[str, Any]) -> float:
    return -(timer["ended_at"] or 0.0)


def timer_details(session: Session, timer_id: int) -> dict[str, Any] | None:
    """One timer's page: its facts, its timeline in words, and what its stack is.
    The stack's text is not here: the page fetches it from ``/timers/{id}/stack``."""
    row = store.timer(session, timer_id)
    if row is None:
        return None
    timer = TimerPublic.from_row(row)
    newest = store.newest_events(session, timer_id, _EVENTS_SHOWN + 1)
    stack = store.stack_facts(session, timer_id)
    observe_only = timer.signal <= 0
    return {
        "now": time.time(),
        "timer": timer.model_dump(mode="json"),
        "events": [
            {
                "id": event.id,
                "kind": event.kind,
                "at": event.at,
                "text": describe_event(event.kind, event.detail, timer.signal),
            }
            for event in reversed(newest[:_EVENTS_SHOWN])
        ],
        "older_events": len(newest) > _EVENTS_SHOWN,
        # Its worker outlived its SIGKILL: still stuck in the kernel, or since exited.
        "unkillable": unkillable_mark(
            [event.detail for event in reversed(newest) if event.kind == EventKind.UNKILLABLE]
        ),
        "stack_title": (
            "Stack captured at expiry (observe only, no signal sent)"
            if observe_only
            else "Stack captured before the kill"
        ),
        "stack_note": (None if stack is None else stack_note(*stack, observe_only=observe_only)),
        # The incidents of its job that hold its rank: a link each (contract 8).
        "incidents": incidents_of_timer(session, timer_id, timer.job_id),
    }


def _active_row(timer: dict[str, Any], now: float) -> dict[str, Any]:
    """The countdown cells of an active timer, as ``tickRow`` in dashboard.js draws them."""
    left = timer["expiration_time"] - now
    total = max(0.001, timer["expiration_time"] - timer["acquired_at"])
    used = min(1.0, max(0.0, (now - timer["acquired_at"]) / total))
    near = left > 0 and (left < 5 or used > 0.8)
    return {
        "countdown": duration(left) if left > 0 else "due",
        "fill": f"{used * 100:.1f}%",
        "class": "near" if near else ("due" if left <= 0 else ""),
    }


templates.env.globals.update(active_row=_active_row)


# ---- routes -------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    views: ViewsDep,
    filters: FiltersDep,
) -> HTMLResponse:
    state = collect_state(service, views, filters)
    jobs_overview: dict[str, Any] = {"jobs": [], "more_jobs": False, "incidents": []}
    silenced: list[SilencePublic] = []
    if state["history_unavailable"] is None:
        try:
            with Session(service.engine) as session:
                jobs_overview = overview(session, caller)
            silenced = [seen_by(caller, item) for item in silences(service.engine, _SILENCES_SHOWN)]
        except DATABASE_ERRORS as error:
            state["history_unavailable"] = service.database.read_failed(error)
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "page": "dashboard",
            "state": state,
            "filters": filters,
            "now": state["now"],
            # The jobs and their recent incidents (job_views), shown as the caller may see them.
            "jobs_overview": jobs_overview,
            # Notifications held back now or soon (contract 11).
            "silences": silenced,
        },
    )


@router.get(
    "/dashboard/state",
    responses={429: {"description": "Timer scans are over their CPU budget: retry later"}},
)
def dashboard_state(service: ServiceDep, views: ViewsDep, filters: FiltersDep) -> dict[str, Any]:
    """Everything the dashboard shows, filtered as its URL says (``scope`` is a substring)."""
    return collect_state(service, views, filters)


@router.get("/ui/timers/{timer_id}", response_class=HTMLResponse, include_in_schema=False)
def timer_page(request: Request, timer_id: TimerIdPath, session: SessionDep) -> HTMLResponse:
    details = timer_details(session, timer_id)
    now = details["now"] if details else None
    return render_page(
        request, "timer", details is not None, now, timer_id=timer_id, details=details
    )


@router.get("/dashboard/timers/{timer_id}", responses={404: {"description": "No such timer"}})
def dashboard_timer(timer_id: TimerIdPath, session: SessionDep) -> dict[str, Any]:
    """One timer's page as JSON: facts, timeline in words, how its stack was captured."""
    details = timer_details(session, timer_id)
    if details is None:
        raise HTTPException(404, detail=f"no timer {timer_id}")
    return details
