"""Notifications of the service's own state (contract 11's ``node_down``, ``loss`` and
``overdue``): what no timer event causes, written into the same outbox, one per
occurrence.

- ``node_down``: a node of the fleet whose heartbeat is older than ``--node-timeout``
  (``app.db.nodes``). One per outage: the key names the node and its last heartbeat,
  so every node and hub that sees the same outage writes the same row once, and a
  node that beats again and falls silent again is a new outage. An outage older than
  ``_NEWS`` when first seen (a node retired long ago) is history, not told.
- ``overdue``: this node's due kills not sent within the stack budget plus the margin
  (the kill watch, as /healthz reads it). One per episode: from the first overdue kill
  until none is overdue.
- ``loss``: events the recorder lost (``app.db.loss_ledger``), written in the
  transaction of the loss's row. One per node until an operator acknowledges the
  losses; later losses are folded into it.

``Conditions.check`` runs on the sender's thread, never on the kill path: a stuck
reaper is told by a thread it cannot hold.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text

from app import log_names
from app.db.nodes import node_statuses

__all__ = ["Conditions", "record_losses"]

logger = logging.getLogger(log_names.NOTIFICATIONS)

# An outage first seen this long after its node's last heartbeat is not news.
_NEWS = 3600.0
# How often nodes and kills are looked at (the sender polls each second).
_INTERVAL = 2.0

_INSERT_ONCE = text(
    "INSERT INTO notifications (key, kind, at, node, job_id, uid, scope_id, timer_id,"
    " incident_id, body, folded, fanned_out)"
    " VALUES (:key, :kind, :at, :node, NULL, NULL, NULL, NULL, NULL, :body, 0, :no)"
    " ON CONFLICT (key) DO NOTHING"
)
_OPEN_LOSS = text(
    "SELECT id, body FROM notifications WHERE kind = 'loss' AND node = :node"
    " AND at > coalesce((SELECT max(acknowledged_at) FROM losses), 0)"
    " ORDER BY at DESC LIMIT 1"
)
_FOLD_LOSS = text("UPDATE notifications SET folded = folded + 1, body = :body WHERE id = :id")


def _insert_once(
    connection: Connection, key: str, kind: str, at: float, node: str, detail: dict[str, Any]
) -> bool:
    written = connection.execute(
        _INSERT_ONCE,
        {
            "key": key,
            "kind": kind,
            "at": at,
            "node": node,
            "body": json.dumps({"detail": detail}),
            "no": False,
        },
    ).rowcount
    return bool(written)


def record_losses(connection: Connection, node: str, rows: list[dict[str, Any]]) -> None:
    """The ``loss`` notification of ``rows`` (the loss ledger's, in its transaction):
    a new one, or the growth of the one not yet acknowledged."""
    lost = sum(int(row["count"]) for row in rows)
    if not lost:
        return
    what = "; ".join(str(row["detail"]) for row in rows)
    known = connection.execute(_OPEN_LOSS, {"node": node}).first()
    if known is None:
        at = max(float(row["at"]) for row in rows)
        detail = {"lost": lost, "detail": what}
        _insert_once(connection, f"loss:{node}:{at!r}", "loss", at, node, detail)
        return
    body = json.loads(known.body)
    detail = body.get("detail", {})
    detail["lost"] = int(detail.get("lost", 0)) + lost
    connection.execute(_FOLD_LOSS, {"id": known.id, "body": json.dumps({"detail": detail})})


class Conditions:
    def __init__(
        self,
        engine: Engine,
        node: str,
        node_timeout: float,
        kill_report: Callable[[], dict[str, Any]],
        *,
        interval: float = _INTERVAL,
    ) -> None:
        """``kill_report``: the service's (``{}`` on a hub, which kills nothing)."""
        self._engine = engine
        self.node = node
        self.node_timeout = node_timeout
        self._kill_report = kill_report
        self._interval = interval
        self._next = 0.0
        self._told: set[str] = set()  # outages already written (by any node)
        self._overdue_since: float | None = None

    def check(self) -> bool:
        """Write what is news (at most every ``interval``); whether anything was."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._interval
        down = self.nodes_down()
        overdue = self.overdue()
        return down or overdue

    def nodes_down(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        statuses = node_statuses(self._engine, self.node_timeout, now, count_active=False)
        news = [
            status
            for status in statuses
            if status.status == "down"
            and status.name != self.node  # a node cannot see its own silence
            and now - status.last_seen < _NEWS
            and self._key(status.name, status.last_seen) not in self._told
        ]
        if not news:
            return False
        written = False
        with self._engine.begin() as connection:
            for status in news:
                key = self._key(status.name, status.last_seen)
                detail = {"last_seen": status.last_seen, "timeout": self.node_timeout}
                written |= _insert_once(connection, key, "node_down", now, status.name, detail)
        # Remembered while the outage lasts: a node that beats again is forgotten.
        still_down = {self._key(s.name, s.last_seen) for s in statuses if s.status == "down"}
        self._told = (self._told | {self._key(s.name, s.last_seen) for s in news}) & still_down
        return written

    @staticmethod
    def _key(name: str, last_seen: float) -> str:
        return f"node_down:{name}:{last_seen!r}"

    def overdue(self) -> bool:
        report = self._kill_report()
        count = int(report.get("overdue") or 0)
        if not count:
            self._overdue_since = None
            return False
        if self._overdue_since is not None:
            return False  # the same episode: told at its start
        now = time.time()
        detail = {
            "count": count,
            "oldest_seconds": float(report.get("oldest_overdue_seconds") or 0.0),
            "allowance": float(report.get("overdue_after_seconds") or 0.0),
        }
        with self._engine.begin() as connection:
            _insert_once(
                connection, f"overdue:{self.node}:{now!r}", "overdue", now, self.node, detail
            )
        self._overdue_since = now  # set once written: a failed write is tried again
        return True
