"""``/ui/notifications``: the channels, the recent deliveries (with their state, attempts
and last error) and the silences, on one page (contract 11). Rendered server-side from
the same queries as ``/channels``, ``/deliveries`` and ``/silences``: a channel's URL
as scheme and host only, never a secret."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.access.callers import CallerDep
from app.deps import ServiceDep, require_database
from app.notify import notify_store, silences
from app.web.page_templates import render_page

__all__ = ["router"]

router = APIRouter(tags=["dashboard"])

_DELIVERIES_SHOWN = 200


@router.get("/ui/notifications", response_class=HTMLResponse, include_in_schema=False)
def notifications_page(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    channel: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    state: Literal["pending", "delivered", "failed", "gave_up", "silenced"] | None = None,
) -> HTMLResponse:
    require_database(service)
    engine = service.engine
    shown = silences.silences(engine, 100)
    channels = notify_store.channels(engine)
    return render_page(
        request,
        "notifications",
        True,
        time.time(),
        channels=channels,
        names={item.id: item.name for item in channels},
        deliveries=notify_store.deliveries(engine, channel, state, _DELIVERIES_SHOWN),
        silences=[silences.seen_by(caller, item) for item in shown],
        chosen={"channel": channel, "state": state},
        alertmanager=bool(service.settings.alertmanager_url),
    )
