"""Which incidents a timer is part of, for its page: the link from one stuck worker's
timer to the incident that explains its job's hang (contract 8).

An incident keeps its ranks as captures, each naming the timer it was taken for
(``incident_captures.timer_id``). That column has no index of its own, and a timer's
page polls every second: the read goes through the timer's job instead (the
incidents' ``job_id`` index, then each incident's captures by theirs), a handful of
rows however many incidents other jobs had.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from app.db.job_models import Incident, IncidentCapture

__all__ = ["INCIDENTS_SHOWN", "incidents_of_timer"]

# A timer is in one incident, in all but a race of two openings: a few links at most.
INCIDENTS_SHOWN = 5


def incidents_of_timer(session: Session, timer_id: int, job_id: str | None) -> list[dict[str, Any]]:
    """``[{id, opened_at}]`` of the incidents that hold a rank of this timer, newest
    first; none for a timer of no job (only a job's expiry opens an incident). Only the
    id and time: the summary names frames, private to the job's owner (the incident's
    page shows each reader what it may see)."""
    if job_id is None:
        return []
    query = (
        select(Incident.id, Incident.opened_at)
        .join(IncidentCapture, col(IncidentCapture.incident_id) == col(Incident.id))
        .where(Incident.job_id == job_id, IncidentCapture.timer_id == timer_id)
        .distinct()
        .order_by(col(Incident.opened_at).desc())
        .limit(INCIDENTS_SHOWN)
    )
    return [
        {"id": incident_id, "opened_at": opened_at}
        for incident_id, opened_at in session.exec(query).all()
        if incident_id is not None  # a stored row always has its id
    ]
