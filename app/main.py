"""``create_app(settings)``: the FastAPI application and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from app import __version__
from app.access.request_limits import BodyLimit, HostCheck, NulInUrl, WrongToken
from app.db.database_status import DATABASE_ERRORS
from app.deps import database_unavailable
from app.hub import NoTimersHere
from app.service import Service
from app.settings import Settings
from app.web.dashboard_views import DashboardViews
from app.web.fleet_view import Fleet
from app.web.live_feed import LiveFeed
from app.web.routers import (
    dashboard,
    events,
    fifos,
    health,
    incidents,
    job_pages,
    jobs,
    losses,
    metrics,
    nodes,
    notification_pages,
    notifications,
    scopes,
    silences,
    timers,
)
from timer_core import ProcessSignaller
from timer_core.engine import Clock

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    signaller: ProcessSignaller | None = None,
) -> FastAPI:
    """The app; ``clock`` and ``signaller`` replace the engine's (tests)."""
    settings = settings or Settings.from_env()
    live_feed = LiveFeed()
    service = Service(settings, clock=clock, signaller=signaller, views=[live_feed])
    # What the dashboard shows of the other nodes sharing the database (all, on a hub).
    fleet = Fleet(service.engine, settings.node, service.local_node is None, settings.node_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # `timer-service serve` starts the service before the HTTP server, where a
        # failure can be told in one line (app.server); a test's app starts here.
        if not service.started:
            service.start()
        try:
            yield
        finally:
            service.stop()

    # FastAPIOffline serves Swagger UI from files in its own package, not from a CDN:
    # cluster nodes usually have no internet, and /docs must still work there. ReDoc is
    # off: its sidebar still fetches a logo from the internet.
    app = FastAPIOffline(
        redoc_url=None,
        title="timer-service",
        summary="A watchdog for stuck worker processes.",
        version=__version__,
        lifespan=lifespan,
        # Every route (app.access.request_limits.WrongToken); the writes' own 401
        # (no token at all) is described on each of them. JSON spelled out: a "model"
        # would be documented in the route's own media type (text/plain for a stack).
        responses={
            401: {
                "description": "An Authorization header was sent and is not the admin "
                "token (only when the service has one)",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}
                },
            }
        },
    )
    app.state.service = service
    app.state.settings = settings
    app.state.views = DashboardViews(live_feed, fleet)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default 422, made JSON-safe: a NaN or a raw byte string in the
        # echoed input would otherwise turn a client error into a 500.
        details = [
            {key: value for key, value in item.items() if key in ("loc", "msg", "type")}
            for item in error.errors()
        ]
        return JSONResponse({"detail": details}, status_code=422)

    async def _database_away(request: Request, error: Exception) -> JSONResponse:
        # A read that met the database away: a 503 that says so, and one log line per
        # outage (DatabaseStatus), not a 500 and a traceback per request (contract 14).
        problem = service.database.read_failed(error)
        http_error = database_unavailable(problem)
        return JSONResponse(
            {"detail": http_error.detail}, status_code=503, headers=http_error.headers
        )

    @app.exception_handler(NoTimersHere)
    async def _no_timers_here(request: Request, error: NoTimersHere) -> JSONResponse:
        # A write to timers on a hub (contract 9): where to arm instead.
        return JSONResponse({"detail": str(error)}, status_code=409)

    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, _database_away)

    app.include_router(timers.router)
    app.include_router(events.router)
    app.include_router(nodes.router)
    app.include_router(jobs.router)
    app.include_router(scopes.router)
    app.include_router(incidents.router)
    app.include_router(fifos.router)
    app.include_router(health.router)
    app.include_router(losses.router)
    app.include_router(notifications.router)
    app.include_router(silences.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    app.include_router(job_pages.router)
    app.include_router(notification_pages.router)
    if settings.token:
        # Innermost of the checks at the door: a wrong Host, NUL or size is told first.
        app.add_middleware(WrongToken, token=settings.token)
    app.add_middleware(NulInUrl)
    app.add_middleware(BodyLimit)
    app.add_middleware(HostCheck, allowed=settings.answered_hosts())
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    return app
