"""How incidents are written: the recorder hands each committed batch's job events
here, in the same transaction.

- An ``incident`` event (the engine captured a job's processes before its first
  signal) opens the job's incident, or joins the one opened within the window (by
  another node sharing the database, or before a restart), with a row per process.
- A later expiry of the job within the window joins the incident: its outcome is
  filled in, and a rank not captured yet brings the stack taken at its own expiry.
- Two nodes may open "the" incident of a job at the same instant. Their transactions
  are serialized by the job's row (``SELECT ... FOR UPDATE``, taken before anything is
  read; the batch's upsert of ``jobs`` already holds it on PostgreSQL): the second one
  finds the first one's incident and joins it, and its analysis sees every rank of
  both. SQLite has one writer at a time anyway. No timing is relied on.
- After each change the analysis (``timer_core.diagnosis.incident``) is redone over
  every rank of the incident, so the row always says who the suspects are.

Incidents are rare (one per hang), so this uses SQLAlchemy's Core, not the batch SQL
of ``event_rows``.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import SQLAlchemyError

from app import log_names
from app.db.job_models import Incident, IncidentCapture, Job, job_owner
from timer_core import TimerEvent
from timer_core.diagnosis import RankCapture, analyse, load_flight_recorder
from timer_core.diagnosis.flight_recorder import stored_recorder
from timer_core.engine import CapturedStack, EventKind, RankStack, Timer
from timer_core.engine.event_details import Incident as IncidentDetail
from timer_core.engine.event_details import Kill, NoKill

__all__ = ["IncidentRecorder"]

logger = logging.getLogger(log_names.INCIDENT_ROWS)

_incidents = Incident.__table__  # type: ignore[attr-defined]
_captures = IncidentCapture.__table__  # type: ignore[attr-defined]
_jobs = Job.__table__  # type: ignore[attr-defined]

# The ends that join an incident; a release does not (the rank finished its step).
_JOINING = frozenset(
    {EventKind.EXPIRED, EventKind.KILLED, EventKind.KILL_FAILED, EventKind.WORKER_GONE}
)
_RECORDED = _JOINING | {EventKind.INCIDENT}


class IncidentRecorder:
    def __init__(self, node: str, window: float) -> None:
        self.node = node
        self.window = window

    def record(self, connection: Connection, batch: list[TimerEvent]) -> int:
        """Write the incidents ``batch`` opens or joins; returns how many it opened."""
        opened = 0
        touched: dict[int, None] = {}
        locked: set[tuple[str, int | None]] = set()
        for event in batch:
            timer = event.timer
            if event.kind not in _RECORDED or not isinstance(timer, Timer):
                continue
            job_id = timer.labels.job_id
            if job_id is None:
                continue
            key = (job_id, timer.uid)
            if key not in locked:
                self._lock_job(connection, *key)
                locked.add(key)
            if isinstance(event.detail, IncidentDetail):
                incident_id, new = self._open(connection, job_id, timer, event.at)
                opened += new
                for capture in event.detail.captures:
                    self._add_capture(connection, incident_id, capture, event.at)
                touched[incident_id] = None
            elif event.kind in _JOINING:
                joined = self._find(connection, job_id, timer.uid, event.at)
                if joined is not None and self._join(connection, joined, event, timer):
                    touched[joined] = None
        for incident_id in touched:
            try:
                self._analyse(connection, incident_id)
            except SQLAlchemyError:
                raise  # the database's: the recorder retries or sets the batch aside
            except Exception:
                # A flaw in the analysis must not cost the batch's events (the kills):
                # the incident keeps its ranks, unanalysed, and the log says why.
                logger.exception("the analysis of incident %d failed", incident_id)
        return opened

    @staticmethod
    def _lock_job(connection: Connection, job_id: str, uid: int | None) -> None:
        """Hold the job's row (of this owner) until commit: one node at a time opens or joins its
        incidents (FOR UPDATE is left out on SQLite, whose writer holds the database)."""
        connection.execute(
            select(_jobs.c.job_id)
            .where(_jobs.c.job_id == job_id, _jobs.c.uid == job_owner(uid))
            .with_for_update()
        )

    def _find(self, connection: Connection, job_id: str, uid: int | None, at: float) -> int | None:
        """The job's newest incident opened within the window before ``at``."""
        return connection.execute(
            select(_incidents.c.id)
            .where(
                _incidents.c.job_id == job_id,
                _incidents.c.uid.is_(None) if uid is None else _incidents.c.uid == uid,
                _incidents.c.opened_at >= at - self.window,
            )
            .order_by(_incidents.c.opened_at.desc())
            .limit(1)
        ).scalar()

    def _open(
        self, connection: Connection, job_id: str, trigger: Timer, at: float
    ) -> tuple[int, bool]:
        found = self._find(connection, job_id, trigger.uid, at)
        if found is not None:
            return found, False
        inserted = connection.execute(
            _incidents.insert().values(
                job_id=job_id,
                opened_at=at,
                node=self.node,
                trigger_timer_id=trigger.id,
                suspects=[],
                summary="",
                groups=[],
                nodes=[self.node],
                uid=trigger.uid,
            )
        ).inserted_primary_key
        assert inserted is not None
        connection.execute(
            update(_jobs)
            .where(_jobs.c.job_id == job_id, _jobs.c.uid == job_owner(trigger.uid))
            .values(incidents=_jobs.c.incidents + 1)
        )
        return int(inserted[0]), True

    def _add_capture(
        self, connection: Connection, incident_id: int, capture: RankStack, at: float
    ) -> None:
        timer = capture.timer
        values: dict[str, Any] = {
            "uid": timer.uid,
            "rank": timer.labels.rank,
            "local_rank": timer.labels.local_rank,
            "timer_id": timer.id,
            "outcome": "expired" if capture.expiring else "captured",
            "expired_at": timer.expiration_time if capture.expiring else None,
            "captured_at": at,
            **_stack_values(capture.stack, capture.note, timer.labels.rank),
        }
        key = (incident_id, timer.node or self.node, timer.pid)
        self._upsert(connection, key, self._capture_id(connection, *key), values)

    def _join(
        self, connection: Connection, incident_id: int, event: TimerEvent, timer: Timer
    ) -> bool:
        """Record ``event``'s end of ``timer`` on its rank's row. A rank not in the
        incident yet joins with the stack taken at its own expiry; an exit alone adds
        no rank."""
        key = (incident_id, timer.node or self.node, timer.pid)
        known = self._capture_id(connection, *key)
        if known is None and event.kind == EventKind.WORKER_GONE:
            return False
        values: dict[str, Any] = {"outcome": event.kind, "timer_id": timer.id}
        if event.kind != EventKind.WORKER_GONE:
            values["expired_at"] = timer.expiration_time
        if known is None:
            detail = event.detail
            note = detail.stack_note if isinstance(detail, Kill | NoKill) else None
            values |= {
                "uid": timer.uid,
                "rank": timer.labels.rank,
                "local_rank": timer.labels.local_rank,
                "captured_at": event.at,
                **_stack_values(event.stack, note, timer.labels.rank),
            }
        self._upsert(connection, key, known, values)
        return True

    @staticmethod
    def _capture_id(connection: Connection, incident_id: int, node: str, pid: int) -> int | None:
        return connection.execute(
            select(_captures.c.id).where(
                _captures.c.incident_id == incident_id,
                _captures.c.node == node,
                _captures.c.pid == pid,
            )
        ).scalar()

    @staticmethod
    def _upsert(
        connection: Connection,
        key: tuple[int, str, int],
        known: int | None,
        values: dict[str, Any],
    ) -> None:
        """One row per process and incident (``key``: incident, node, pid; ``known``: its
        row's id, if it has one): created, or updated without losing a stack it already
        has. (Only this node writes its own processes' rows: no race.)"""
        if known is None:
            incident_id, node, pid = key
            connection.execute(
                _captures.insert().values(incident_id=incident_id, node=node, pid=pid, **values)
            )
            return
        if values.get("stack_text") is None:
            values = {k: v for k, v in values.items() if k not in _EVIDENCE}
        connection.execute(update(_captures).where(_captures.c.id == known).values(**values))

    def _analyse(self, connection: Connection, incident_id: int) -> None:
        rows = connection.execute(
            select(_captures).where(_captures.c.incident_id == incident_id)
        ).all()
        analysis = analyse(
            [
                RankCapture(
                    row.rank,
                    row.pid,
                    row.node,
                    row.timer_id,
                    row.outcome,
                    row.expired_at,
                    row.stack_text,
                    # Written by whichever node captured the rank: read defensively.
                    None
                    if row.collectives is None or row.rank is None
                    else stored_recorder(row.rank, row.collectives),
                )
                for row in rows
            ]
        )
        ids = {(row.node, row.pid): row.id for row in rows}
        for result in analysis.ranks:
            connection.execute(
                update(_captures)
                .where(_captures.c.id == ids[(result.node, result.pid)])
                .values(group_number=result.group)
            )
        connection.execute(
            update(_incidents)
            .where(_incidents.c.id == incident_id)
            .values(
                suspects=list(analysis.suspects),
                summary=analysis.summary,
                groups=[
                    {"group": group, "ranks": list(ranks), "frames": list(frames)}
                    for group, ranks, frames in analysis.groups
                ],
                nodes=sorted({row.node for row in rows}),
                collective_findings=[f.as_json() for f in analysis.collective_findings],
                suspect_rules={_rank_key(rank): rule for rank, rule in analysis.suspect_rules},
            )
        )


# A capture row's columns of its evidence, written together: a later event with no
# stack leaves them as they are.
_EVIDENCE = frozenset({"stack_method", "stack_note", "stack_text", "collectives"})


def _stack_values(
    stack: CapturedStack | None, note: str | None, rank: int | None
) -> dict[str, Any]:
    """A capture row's evidence columns: the stack and the flight recorder, or why
    there is none."""
    if stack is not None:
        return {
            "stack_method": stack.method,
            "stack_note": None,
            "stack_text": _printable(stack.text),
            "collectives": _recorder(stack.flight_recorder, rank),
        }
    return {
        "stack_method": None,
        "stack_note": _printable(note) if note else None,
        "stack_text": None,
        "collectives": None,
    }


def _recorder(raw: bytes | None, rank: int | None) -> dict[str, Any] | None:
    """The flight recorder the worker's server answered, as the incident keeps it:
    normalized (its last entries per group), not the dump's megabytes. Only with the
    rank known: the analysis compares ranks by number."""
    if raw is None or rank is None:
        return None
    stored: dict[str, Any] = _printable_json(load_flight_recorder(rank, raw).stored_json())
    return stored


def _printable_json(value: Any) -> Any:
    """``value`` with each string ``_printable``: a worker's names may hold a NUL,
    which PostgreSQL's jsonb (should an operator cast to it) refuses."""
    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, list):
        return [_printable_json(item) for item in value]
    if isinstance(value, dict):
        return {_printable(k): _printable_json(v) for k, v in value.items()}
    return value


def _rank_key(rank: int | None) -> str:
    return "null" if rank is None else str(rank)


def _printable(text: str) -> str:
    """A stack as text any database holds: a NUL (a worker can put one in its own dump,
    or in a function name py-spy prints) becomes U+FFFD; PostgreSQL refuses NUL."""
    return text.replace("\x00", "\ufffd")
