"""``--alertmanager-url``: kills, incidents and unkillable workers as alerts, posted to
Alertmanager's v2 API (``POST /api/v2/alerts``), with labels ``job``, ``rank`` and
``node`` and the summary as an annotation (contract 11).

Alertmanager expects its clients to send the alerts that fire again and again (it
forgets one whose ``endsAt`` passes), and takes the same alert any number of times,
from any number of senders, as one. So this keeps no state of its own: every round it
reads the recent notifications and posts each one's alert as it stands now, firing
or resolved. A node that restarts, or a second node of the fleet, posts the same
alerts, which Alertmanager merges; an Alertmanager that was down gets them all at its
next round.

- A kill fires from the kill until the incident window has passed (it is an event: its
  timer has ended), then resolves.
- An incident fires until its window closes (no more ranks join it), then resolves.
- An unkillable worker fires until it exits (its exit is folded into its notification).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from app import log_names
from app.notify.notification_body import notification_body
from app.notify.webhook import post_json

__all__ = ["Alertmanager", "alerts_of"]

logger = logging.getLogger(log_names.NOTIFICATIONS)

_RESEND = 30.0  # seconds between rounds when nothing new happens
# How long after it resolves an alert is still posted (resolved): Alertmanager keeps a
# resolved alert's notification this long, and a node down for less catches up.
_RESOLVED_KEPT = 600.0
# An unkillable worker is watched at most this long (then the alert resolves).
_UNKILLABLE_KEPT = 86400.0
_MAX_ALERTS = 1000
_NAMES = {
    "kill": "TimerWorkerKilled",
    "incident": "TimerJobIncident",
    "unkillable": "TimerWorkerUnkillable",
}


def _rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def alerts_of(
    rows: list[dict[str, Any]], base_url: str, window: float, now: float
) -> list[dict[str, Any]]:
    """Each notification's alert as it stands at ``now``."""
    alerts = []
    for row in rows:
        body = notification_body(row, base_url)
        timer = body.get("timer") or {}
        labels = {"alertname": _NAMES[row["kind"]], "service": "timer-service", "node": row["node"]}
        if row["job_id"] is not None:
            labels["job"] = str(row["job_id"])
        if row["kind"] == "incident":
            labels["incident_id"] = str(row["incident_id"])
        else:
            labels["timer_id"] = str(timer.get("id"))
            if timer.get("rank") is not None:
                labels["rank"] = str(timer["rank"])
        if row["kind"] == "unkillable":
            detail = json.loads(row["body"]).get("detail") or {}
            exited = bool(detail.get("exited"))
            ends = now if exited else now + 4 * _RESEND
        else:
            ends = row["at"] + window
        alerts.append(
            {
                "labels": labels,
                "annotations": {"summary": body["summary"], "url": body["url"]},
                "startsAt": _rfc3339(row["at"]),
                "endsAt": _rfc3339(min(ends, row["at"] + _UNKILLABLE_KEPT)),
                "generatorURL": body["url"],
            }
        )
    return alerts


class Alertmanager:
    def __init__(self, url: str, engine: Engine, base_url: str, window: float) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self._engine = engine
        self._base_url = base_url.rstrip("/")
        self._window = window
        self._next = 0.0
        self.last_error: str | None = None

    def due(self, news: bool) -> bool:
        return news or time.monotonic() >= self._next

    def push(self) -> bool:
        """Post every recent notification's alert; whether Alertmanager took them."""
        self._next = time.monotonic() + _RESEND
        now = time.time()
        since = now - max(self._window + _RESOLVED_KEPT, 0.0)
        with self._engine.connect() as connection:
            rows = [
                dict(row)
                for row in connection.execute(
                    text(
                        "SELECT n.id, n.kind, n.at, n.node, n.job_id, n.incident_id, n.body,"
                        " n.folded, i.summary, i.suspects, i.nodes, i.opened_at"
                        " FROM notifications n LEFT JOIN incidents i ON i.id = n.incident_id"
                        " WHERE n.kind IN ('kill', 'incident', 'unkillable')"
                        " AND (n.at >= :since OR (n.kind = 'unkillable' AND n.at >= :stuck))"
                        f" ORDER BY n.at DESC LIMIT {_MAX_ALERTS}"
                    ),
                    {"since": since, "stuck": now - _UNKILLABLE_KEPT - _RESOLVED_KEPT},
                ).mappings()
            ]
        for row in rows:
            for name in ("suspects", "nodes"):
                if row.get(name) is not None and not isinstance(row[name], str):
                    row[name] = json.dumps(row[name])
        if not rows:
            return True
        outcome = post_json(
            self.url, json.dumps(alerts_of(rows, self._base_url, self._window, now)).encode()
        )
        if outcome.delivered:
            if self.last_error is not None:
                logger.warning("Alertmanager takes alerts again")
            self.last_error = None
            return True
        if outcome.error != self.last_error:
            logger.error("Alertmanager did not take the alerts (%s); retrying", outcome.error)
        self.last_error = outcome.error
        return False
