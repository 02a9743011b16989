"""``/channels`` and ``/deliveries`` (contract 11): where notifications go, and how
each delivery went.

Only the admin (root, the service's uid or the token) may make, delete or test a
channel: a channel is a URL the service (usually root) will send requests to, and
letting anyone choose it would make the service their proxy. Reads show no secret and
no URL credentials (``app.notify.channels.shown_url``).
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel

from app.access.callers import Caller, CallerDep, forbidden, is_privileged
from app.db.models import ErrorMessage, Page
from app.deps import JsonBody, ServiceDep, require_database, require_token
from app.notify import notify_store
from app.notify.channels import ChannelCreate, ChannelPublic, is_webhook
from app.notify.delivery import deliver
from app.notify.notify_store import DeliveryPublic

__all__ = ["router"]

router = APIRouter(tags=["notifications"])

Write = Annotated[None, Depends(require_token)]
ChannelId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "Missing or wrong bearer token"},
    403: {
        "model": ErrorMessage,
        "description": "Only root, the service's user or the admin token may",
    },
}
_JSON_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "The body is not valid JSON"},
    415: {
        "model": ErrorMessage,
        "description": "The body is not sent as JSON (content-type: application/json)",
    },
}
_AWAY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorMessage, "description": "The database is away: retry once it is back"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorMessage, "description": "No such channel"}
}


class ChannelCreated(ChannelPublic):
    # Only when the service made the webhook's secret: shown this once, to set up the
    # receiver with. A secret given in the request is never sent back.
    secret: str | None = None


class TestOutcome(BaseModel):
    delivered: bool
    error: str | None
    delivery_id: str


def _require_admin(caller: Caller, action: str) -> None:
    if not is_privileged(caller):
        raise forbidden(
            f"{caller.describe()} may not {action}: only root, the service's user or the "
            "admin token may (a channel is a URL the service sends requests to)"
        )


@router.post(
    "/channels", status_code=status.HTTP_201_CREATED, responses=_ADMIN_ONLY | _JSON_BODY | _AWAY
)
def create_channel(
    given: ChannelCreate, service: ServiceDep, caller: CallerDep, _: Write, _json: JsonBody
) -> ChannelCreated:
    """Add a channel. A webhook given no ``secret`` gets one, returned this once."""
    _require_admin(caller, "add a notification channel")
    require_database(service)
    made = None
    secret = given.secret
    if secret is None and is_webhook(given.url):
        secret = made = secrets.token_hex(32)
    row = notify_store.add_channel(service.engine, given, secret, caller.describe())
    return ChannelCreated(**ChannelPublic.of(row).model_dump(), secret=made)


@router.get("/channels", responses=_AWAY)
def list_channels(service: ServiceDep) -> Page[ChannelPublic]:
    """Every channel, its URL shown as scheme and host only."""
    require_database(service)
    return Page[ChannelPublic](items=notify_store.channels(service.engine), next=None)


@router.delete("/channels/{channel_id}", responses=_ADMIN_ONLY | _NOT_FOUND | _AWAY)
def delete_channel(
    channel_id: ChannelId, service: ServiceDep, caller: CallerDep, _: Write
) -> ChannelPublic:
    _require_admin(caller, "delete a notification channel")
    require_database(service)
    deleted = notify_store.delete_channel(service.engine, channel_id)
    if deleted is None:
        raise HTTPException(404, detail=f"no channel {channel_id}")
    return deleted


@router.post("/channels/{channel_id}/test", responses=_ADMIN_ONLY | _NOT_FOUND | _AWAY)
def test_channel(
    channel_id: ChannelId, service: ServiceDep, caller: CallerDep, _: Write
) -> TestOutcome:
    """Send a test notification now (bounded by the send's timeout) and say how it went;
    it is not recorded as a delivery."""
    _require_admin(caller, "test a notification channel")
    require_database(service)
    row = notify_store.channel_row(service.engine, channel_id)
    if row is None:
        raise HTTPException(404, detail=f"no channel {channel_id}")
    delivery_id = f"test-{secrets.token_hex(8)}"
    body = {
        "id": 0,
        "kind": "test",
        "at": time.time(),
        "node": service.settings.node,
        "job_id": None,
        "summary": f"a test of channel {row.name!r} from timer-service on {service.settings.node}",
        "url": service.sender.base_url,
    }
    outcome = deliver(row.url, row.secret, delivery_id, body)
    return TestOutcome(delivered=outcome.delivered, error=outcome.error, delivery_id=delivery_id)


@router.get("/deliveries", responses=_AWAY)
def list_deliveries(
    service: ServiceDep,
    channel: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    state: Literal["pending", "delivered", "failed", "gave_up", "silenced"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[DeliveryPublic]:
    """The deliveries, newest first, with their attempts and last error."""
    require_database(service)
    return Page[DeliveryPublic](
        items=notify_store.deliveries(service.engine, channel, state, limit), next=None
    )
