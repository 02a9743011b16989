"""The outbox's writing side: the recorder hands every batch here, inside the batch's
own transaction, so a notification exists exactly when the event that caused it does
(a crash loses both or neither; nothing is sent for an event that was never recorded).

What is told (contract 11):

- ``incident``: a job's ``incident`` event (its ranks captured before the first kill)
  makes the notification ``incident:<id>``. Another node's capture of the same incident,
  and every later expiry of the job joining it, is folded into that one row (``folded``
  counts them), never told again: one notification per incident, not per rank.
- ``kill``: a worker killed outside any incident. Kills of one job within the incident
  window fold into the first one's notification (a job with capture off still tells
  one thing per hang). One uid's kills are told one by one at most
  ``KILLS_TOLD_PER_UID`` a minute; past that, the minute's kills of that uid fold into
  one notification (``kills-of-uid:<uid>:<minute>``) that says so and counts them, so
  a user whose jobs die in a loop (each kill carrying a scope name it chose) cannot
  flood the channels. Root's kills are not limited (the admin's own work).
- ``unkillable``: a worker the kernel would not let die (the engine's ``unkillable``
  event); its exit is folded in.
- ``straggler``: a rank slower than the others at a scope (one event per episode).

A node down, lost events and overdue kills are no timer's events: ``app.notify.conditions``
writes them into the same table.

The work here is a few indexed statements for the batches that hold such events and
nothing for the others: the sending (network, retries) is the sender's, on its own
thread, so a failing channel never slows the recorder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DataError, IntegrityError

from app import log_names
from timer_core import TimerEvent
from timer_core.engine import EventKind, Timer

__all__ = ["KILLS_TOLD_PER_UID", "NOTIFYING_KINDS", "Outbox", "timer_body"]

logger = logging.getLogger(log_names.NOTIFICATIONS)

_UNKILLABLE = EventKind.UNKILLABLE
_STRAGGLER = EventKind.STRAGGLER
# The ends that join a job's incident (as app.db.incident_rows joins them).
_JOINING = frozenset(
    {EventKind.EXPIRED, EventKind.KILLED, EventKind.KILL_FAILED, EventKind.WORKER_GONE}
)
NOTIFYING_KINDS = frozenset({EventKind.INCIDENT, *_JOINING, _UNKILLABLE, _STRAGGLER})

_INSERT = text(
    "INSERT INTO notifications (key, kind, at, node, job_id, uid, scope_id, timer_id,"
    " incident_id, body, folded, fanned_out)"
    " VALUES (:key, :kind, :at, :node, :job_id, :uid, :scope_id, :timer_id, :incident_id,"
    " :body, 0, :fanned_out)"
    " ON CONFLICT (key) DO UPDATE SET folded = notifications.folded + 1"
)
_BODY_OF = text("SELECT id, body FROM notifications WHERE key = :key")
_FOLD_WITH_BODY = text("UPDATE notifications SET folded = folded + 1, body = :body WHERE id = :id")
_FOLD = text("UPDATE notifications SET folded = folded + 1 WHERE id = :id")
_INCIDENT_OF_JOB = text(
    "SELECT id FROM incidents WHERE job_id = :job_id"
    " AND coalesce(uid, -1) = coalesce(:uid, -1) AND opened_at >= :since"
    " ORDER BY opened_at DESC LIMIT 1"
)
_NOTIFICATION_OF_INCIDENT = text("SELECT id FROM notifications WHERE key = :key")
KILLS_TOLD_PER_UID = 10  # a minute; the rest are folded into one notification
_KILL_RATE_WINDOW = 60.0
_KILLS_OF_UID = text(
    "SELECT count(*) FROM (SELECT 1 FROM notifications WHERE kind = 'kill'"
    " AND coalesce(uid, -1) = coalesce(:uid, -1) AND at >= :since"
    f" LIMIT {KILLS_TOLD_PER_UID}) AS told"
)
_KILL_OF_JOB = text(
    "SELECT id FROM notifications WHERE kind = 'kill' AND job_id = :job_id"
    " AND coalesce(uid, -1) = coalesce(:uid, -1) AND at >= :since"
    " ORDER BY at DESC LIMIT 1"
)


def timer_body(timer: Timer) -> dict[str, Any]:
    """The ``timer`` of a webhook's body: what identifies the worker, no stack."""
    labels = timer.labels
    return {
        "id": timer.id,
        "pid": timer.pid,
        "scope_id": timer.scope_id,
        "state": str(timer.state),
        "signal": timer.signal,
        "uid": timer.uid,
        "node": timer.node,
        "job_id": labels.job_id,
        "rank": labels.rank,
        "local_rank": labels.local_rank,
        "world_size": labels.world_size,
    }


def _told(event: TimerEvent) -> dict[str, Any]:
    """What of the event's detail a notification carries: how late, and why; never a
    stack (a channel is not a place to copy what a worker was running)."""
    detail = event.detail.as_json()
    told = (
        "latency",
        "reason",
        "error",
        "state",
        "wchan",
        "seconds",
        "exited",
        "slowdown",
        "window",
        "ratio",
    )
    return {key: detail[key] for key in told if key in detail}


class Outbox:
    def __init__(self, node: str, window: float, wake: Callable[[], None] = lambda: None) -> None:
        """``window``: the incident window (--incident-window); ``wake``: tells the
        sender there is news (it also looks on its own, at its pace)."""
        self.node = node
        self.window = window
        self._wake = wake
        self._news = False
        self.written = 0

    def record(self, connection: Connection, batch: list[TimerEvent]) -> None:
        """Write the notifications ``batch`` causes, in the caller's transaction."""
        relevant = [
            event
            for event in batch
            if event.kind in NOTIFYING_KINDS and isinstance(event.timer, Timer)
        ]
        if not relevant:
            return
        # A savepoint: a value the outbox cannot hold costs its notification (logged),
        # never the batch's events. The database's own failures still fail the batch,
        # which the recorder retries whole.
        savepoint = connection.begin_nested()
        try:
            for event in relevant:
                self._one(connection, event)
        except (IntegrityError, DataError, ValueError, TypeError) as error:
            savepoint.rollback()
            logger.error("notifications of a batch could not be written: %s", error)
            return
        savepoint.commit()
        self._news = True

    def committed(self) -> None:
        """The recorder's batch is committed: the sender can see what it wrote now."""
        if self._news:
            self._news = False
            self._wake()

    def _one(self, connection: Connection, event: TimerEvent) -> None:
        timer = event.timer
        assert isinstance(timer, Timer)
        job_id = timer.labels.job_id
        kind = str(event.kind)
        if kind == _UNKILLABLE:
            self._unkillable(connection, event, timer)
            return
        if kind == _STRAGGLER:
            # One event per episode, at the release (of this timer) that tipped it.
            self._insert(connection, f"straggler:{timer.id}", "straggler", event, timer, None)
            return
        if job_id is not None:
            since = event.at - self.window
            incident = connection.execute(
                _INCIDENT_OF_JOB, {"job_id": job_id, "uid": timer.uid, "since": since}
            ).scalar()
            if incident is not None:
                key = f"incident:{incident}"
                if event.kind == EventKind.INCIDENT:
                    self._insert(connection, key, "incident", event, timer, int(incident))
                    return
                known = connection.execute(_NOTIFICATION_OF_INCIDENT, {"key": key}).scalar()
                if known is not None:
                    connection.execute(_FOLD, {"id": known})
                    return
                if event.kind == EventKind.KILLED:
                    self._insert(connection, key, "incident", event, timer, int(incident))
                return
        if event.kind != EventKind.KILLED:
            return
        if job_id is not None:
            earlier = connection.execute(
                _KILL_OF_JOB, {"job_id": job_id, "uid": timer.uid, "since": event.at - self.window}
            ).scalar()
            if earlier is not None:
                connection.execute(_FOLD, {"id": earlier})
                return
        if self._past_rate(connection, event, timer):
            # The first past the rate makes the minute's notification; the others fold in.
            minute = int(event.at // _KILL_RATE_WINDOW)
            key = f"kills-of-uid:{timer.uid if timer.uid is not None else 'unknown'}:{minute}"
            over = {"uid": timer.uid, "limit": KILLS_TOLD_PER_UID}
            self._insert(connection, key, "kill", event, timer, None, over_rate=over)
            return
        self._insert(connection, f"kill:{timer.id}", "kill", event, timer, None)

    def _past_rate(self, connection: Connection, event: TimerEvent, timer: Timer) -> bool:
        """Whether ``timer``'s uid has had its ``KILLS_TOLD_PER_UID`` kills told in the
        last minute. Root's are always told: its jobs are the admin's own, no user's
        text, and a root job's kills are told one per job already."""
        if timer.uid == 0:
            return False
        told = connection.execute(
            _KILLS_OF_UID, {"uid": timer.uid, "since": event.at - _KILL_RATE_WINDOW}
        ).scalar()
        return int(told or 0) >= KILLS_TOLD_PER_UID

    def _unkillable(self, connection: Connection, event: TimerEvent, timer: Timer) -> None:
        """A worker's first ``unkillable`` event is told; its second (the exit) is folded
        in, keeping where it was stuck and adding when it went (the Alertmanager alert
        resolves on it)."""
        key = f"unkillable:{timer.id}"
        known = connection.execute(_BODY_OF, {"key": key}).first()
        if known is None:
            self._insert(connection, key, "unkillable", event, timer, None)
            return
        body = json.loads(known.body)
        told = _told(event)
        if told.get("exited"):
            body["detail"] = {
                **body.get("detail", {}),
                "exited": True,
                "exited_after": told.get("seconds"),
            }
        connection.execute(_FOLD_WITH_BODY, {"id": known.id, "body": json.dumps(body)})

    def _insert(
        self,
        connection: Connection,
        key: str,
        kind: str,
        event: TimerEvent,
        timer: Timer,
        incident_id: int | None,
        over_rate: dict[str, Any] | None = None,
    ) -> None:
        body: dict[str, Any] = {"timer": timer_body(timer), "detail": _told(event)}
        if over_rate is not None:
            body["over_rate"] = over_rate
        connection.execute(
            _INSERT,
            {
                "key": key,
                "kind": kind,
                "at": event.at,
                "node": timer.node or self.node,
                "job_id": timer.labels.job_id,
                "uid": timer.uid,
                "scope_id": timer.scope_id,
                "timer_id": timer.id,
                "incident_id": incident_id,
                "body": json.dumps(body),
                "fanned_out": False,
            },
        )
        self.written += 1
