"""The outbox's rows as the sender takes them (see ``app.notify.sender``): the fan-out
of each new notification to the channels that want it, the claim of due deliveries
under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two nodes never take the
same one), and the release of a dead process's leases."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text

from app.notify.channels import Match, Subject, matches, wants

__all__ = ["Claimed", "claim", "fan_out", "release_leases"]

_FAN_OUT_BATCH = 100


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this node holds the lease of, with what sending it needs."""

    id: int
    delivery_id: str
    attempts: int
    created_at: float
    channel_id: int | None  # None: the channel was deleted
    channel_name: str
    url: str
    secret: str | None
    notification: dict[str, Any]
    lease: str  # the claim's mark in ``leased_by``


def _locking(connection: Connection) -> str:
    # SQLite has one writer at a time and no row locks: the clause is PostgreSQL's.
    return "" if connection.dialect.name == "sqlite" else " FOR UPDATE SKIP LOCKED"


def fan_out(engine: Engine) -> int:
    """One delivery per new notification and channel that wants it; how many
    notifications were fanned out."""
    now = time.time()
    with engine.begin() as connection:
        rows = connection.execute(
            text(
                "SELECT id, kind, job_id, node, uid, scope_id FROM notifications"
                f" WHERE fanned_out = :no ORDER BY id LIMIT {_FAN_OUT_BATCH}" + _locking(connection)
            ),
            {"no": False},
        ).all()
        if not rows:
            return 0
        channels = connection.execute(text("SELECT id, events, match FROM channels")).all()
        wanted = [
            (channel.id, json.loads(channel.events), Match.model_validate_json(channel.match))
            for channel in channels
        ]
        new = []
        for row in rows:
            subject = Subject(job=row.job_id, node=row.node, uid=row.uid, scope=row.scope_id)
            for channel_id, events, match in wanted:
                if wants(events, row.kind) and matches(match, subject):
                    new.append(
                        {
                            "delivery_id": secrets.token_hex(16),
                            "notification_id": row.id,
                            "channel_id": channel_id,
                            "created_at": now,
                            "next_at": now,
                        }
                    )
        if new:
            connection.execute(
                text(
                    "INSERT INTO deliveries (delivery_id, notification_id, channel_id,"
                    " state, attempts, created_at, next_at) VALUES (:delivery_id,"
                    " :notification_id, :channel_id, 'pending', 0, :created_at, :next_at)"
                ),
                new,
            )
        ids = [row.id for row in rows]
        connection.execute(
            text("UPDATE notifications SET fanned_out = :yes WHERE id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"yes": True, "ids": ids},
        )
    return len(rows)


def claim(engine: Engine, node: str, lease_seconds: float, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries to this node (none that another node
    holds), with what sending each needs. One UPDATE takes them, so two claims never
    take the same delivery: on PostgreSQL its subquery skips the rows another node
    has locked; SQLite runs one writing statement at a time."""
    now = time.time()
    # This claim's own mark: its outcomes are written only while the mark is there.
    lease = f"{node} {secrets.token_hex(8)}"
    with engine.begin() as connection:
        taken = connection.execute(
            text(
                "UPDATE deliveries SET lease_until = :until, leased_by = :lease"
                " WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending'"
                " AND next_at <= :now AND (lease_until IS NULL OR lease_until < :now)"
                f" ORDER BY next_at LIMIT {int(limit)}{_locking(connection)})"
            ),
            {"until": now + lease_seconds, "lease": lease, "now": now},
        ).rowcount
        if not taken:
            return []
        rows = connection.execute(
            text(
                "SELECT d.id, d.delivery_id, d.attempts, d.created_at, c.id AS channel_id,"
                " c.name, c.url, c.secret, n.id AS notification_id, n.kind, n.at, n.node,"
                " n.job_id, n.uid, n.scope_id, n.timer_id, n.incident_id, n.body, n.folded,"
                " i.summary, i.suspects, i.nodes, i.opened_at"
                " FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
                " LEFT JOIN channels c ON c.id = d.channel_id"
                " LEFT JOIN incidents i ON i.id = n.incident_id"
                " WHERE d.leased_by = :lease ORDER BY d.next_at"
            ),
            {"lease": lease},
        ).mappings()
        claimed = []
        for row in rows:
            notification = dict(row)
            notification["id"] = row["notification_id"]
            for name in ("suspects", "nodes"):
                value = notification.get(name)
                if value is not None and not isinstance(value, str):
                    notification[name] = json.dumps(value)
            claimed.append(
                Claimed(
                    id=row["id"],
                    delivery_id=row["delivery_id"],
                    attempts=row["attempts"],
                    created_at=row["created_at"],
                    channel_id=row["channel_id"],
                    channel_name=row["name"] or "",
                    url=row["url"] or "",
                    secret=row["secret"],
                    notification=notification,
                    lease=lease,
                )
            )
        return claimed


def release_leases(engine: Engine, node: str) -> int:
    """Free every lease a process of ``node`` holds on a pending delivery; how many.
    Only for a process that holds its node's service lock (see ``Sender``)."""
    prefix = f"{node} "
    with engine.begin() as connection:
        freed = connection.execute(
            text(
                "UPDATE deliveries SET lease_until = NULL, leased_by = NULL"
                " WHERE state = 'pending' AND substr(leased_by, 1, :length) = :prefix"
                " AND length(leased_by) = :length + 16"
            ),
            {"prefix": prefix, "length": len(prefix)},
        ).rowcount
    return int(freed)
