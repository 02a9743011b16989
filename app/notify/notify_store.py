"""Every query of the notification API: channels made, listed and deleted, and the
deliveries listed."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, text

from app.notify.channels import ChannelCreate, ChannelPublic
from app.notify.tables import Channel

__all__ = [
    "DeliveryPublic",
    "add_channel",
    "channel_row",
    "channels",
    "delete_channel",
    "deliveries",
]


class DeliveryPublic(BaseModel):
    id: int
    delivery_id: str
    channel_id: int
    notification_id: int
    kind: str
    job_id: str | None
    node: str
    state: str
    attempts: int
    last_error: str | None
    created_at: float
    next_at: float
    finished_at: float | None


def add_channel(engine: Engine, given: ChannelCreate, secret: str | None, by: str) -> Channel:
    row = Channel(
        name=given.name,
        url=given.url,
        secret=secret,
        events=json.dumps(given.events),
        match=given.match.model_dump_json(exclude_none=True),
        created_at=time.time(),
        created_by=by,
    )
    with engine.begin() as connection:
        inserted = connection.execute(
            Channel.__table__.insert().values(  # type: ignore[attr-defined]
                **row.model_dump(exclude={"id"})
            )
        ).inserted_primary_key
    assert inserted is not None
    row.id = int(inserted[0])
    return row


def channel_row(engine: Engine, channel_id: int) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT * FROM channels WHERE id = :id"), {"id": channel_id}
        ).first()


def channels(engine: Engine) -> list[ChannelPublic]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM channels ORDER BY id")).all()
    return [ChannelPublic.of(row) for row in rows]


def delete_channel(engine: Engine, channel_id: int) -> ChannelPublic | None:
    """Delete the channel; its deliveries not sent yet fail as the sender meets them."""
    with engine.begin() as connection:
        row = connection.execute(
            text("SELECT * FROM channels WHERE id = :id"), {"id": channel_id}
        ).first()
        if row is None:
            return None
        connection.execute(text("DELETE FROM channels WHERE id = :id"), {"id": channel_id})
    return ChannelPublic.of(row)


def deliveries(
    engine: Engine, channel: int | None, state: str | None, limit: int
) -> list[DeliveryPublic]:
    """Newest first."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if channel is not None:
        where.append("d.channel_id = :channel")
        params["channel"] = channel
    if state is not None:
        where.append("d.state = :state")
        params["state"] = state
    sql = (
        "SELECT d.id, d.delivery_id, d.channel_id, d.notification_id, n.kind, n.job_id,"
        " n.node, d.state, d.attempts, d.last_error, d.created_at, d.next_at, d.finished_at"
        " FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY d.id DESC LIMIT :limit"
    )
    with engine.connect() as connection:
        rows = connection.execute(text(sql), params).mappings().all()
    return [DeliveryPublic.model_validate(dict(row)) for row in rows]
