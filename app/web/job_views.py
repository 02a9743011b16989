"""What the jobs and incidents pages show: the dashboard's jobs and recent incidents,
one job's grid of ranks, and one incident's groups with their ranks. The API's reads
(``job_store``) shown as the caller may see them (``incident_privacy``), so a page
never shows more than the API would answer the same caller."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from app.access.callers import Caller
from app.access.incident_privacy import hidden_on_page, may_read_stack, visible
from app.db import job_store, store
from app.db.job_models import IncidentCapture, IncidentPublic, job_owner
from app.web.collective_views import collective_view, suspect_rules
from app.web.job_status import job_status, ranks_text, suspects_marked
from app.web.unkillable_marks import unkillable_marks

__all__ = ["incident_view", "job_view", "overview"]

# The dashboard lists this many jobs and incidents; the API pages through the rest.
_JOBS_SHOWN = 20
_INCIDENTS_SHOWN = 10
# A job's page lists its newest incidents.
_JOB_INCIDENTS_SHOWN = 50


def _incidents(
    session: Session, caller: Caller, job: str | None, limit: int, uid: int | None = None
) -> list[Any]:
    rows, _ = job_store.incidents_page(session, job, limit, None, uid)
    return [visible(caller, row).model_dump(mode="json") for row in rows]


def overview(session: Session, caller: Caller) -> dict[str, Any]:
    """The dashboard's jobs (newest activity first) and recent incidents."""
    jobs, more = job_store.jobs_page(session, _JOBS_SHOWN, None)
    return {
        "jobs": [job.model_dump(mode="json") for job in jobs],
        "more_jobs": more is not None,
        "incidents": _incidents(session, caller, None, _INCIDENTS_SHOWN),
    }


def job_view(
    session: Session, caller: Caller, job_id: str, uid: int | None
) -> dict[str, Any] | None:
    """One job's page (of this id and owner, chosen as ``GET /jobs/{id}`` chooses): its
    facts, the latest timer of each rank, its incidents. Raises SeveralOwners."""
    detail = job_store.find_job(session, job_id, uid, caller.uid)
    if detail is None:
        return None
    owner = job_owner(detail.uid)
    job = detail.model_dump(mode="json")
    incidents = _incidents(session, caller, job_id, _JOB_INCIDENTS_SHOWN, owner)
    for incident in incidents:
        # "rank 2", not "2": a bare number in a Suspects column reads as a count.
        incident["suspects_text"] = ranks_text(incident["suspects"])
    status = job_status(job)
    marked = suspects_marked(job, status["status"], incidents)
    return {
        "job": job,
        "status": status,
        # The newest incident, which a hung job's status links to.
        "latest_incident": incidents[0] if incidents else None,
        # The suspects the grid marks (job_status: only while their incident is current).
        "suspects": set(marked),
        "suspects_text": ranks_text(marked) if marked else None,
        # The ranks whose worker outlived its SIGKILL (contract 10), by timer id.
        "unkillable": unkillable_marks(session, [rank.timer_id for rank in detail.ranks]),
        "incidents": incidents,
    }


def incident_view(session: Session, caller: Caller, incident_id: int) -> dict[str, Any] | None:
    """One incident's page: the summary, then each group with its ranks (suspects
    marked, each with its capture, whose stack the page links to) and its frames, and
    the collectives (``collective_views``)."""
    row = job_store.incident(session, incident_id)
    if row is None:
        return None
    shown = visible(caller, row)
    hidden = shown is not row.public
    incident = shown.model_dump(mode="json")
    rules = suspect_rules(incident)
    unreadable = _unreadable_stacks(session, caller, incident_id) if hidden else set()
    return {
        "incident": incident,
        "frames_hidden": hidden,
        # In place of the summary, for a reader who may not read every stack.
        "hidden_text": hidden_on_page(caller, row.owners),
        "groups": _groups(shown, rules, unreadable),
        "rules": [(rank, rules.get(rank)) for rank in shown.suspects],
        "collectives": collective_view(incident, hidden),
        "trigger": _trigger(session, shown),
    }


def _unreadable_stacks(session: Session, caller: Caller, incident_id: int) -> set[int]:
    """The captures of the incident whose stack ``caller`` may not read (their page link
    would answer 403), by capture id. Read only when the frames are hidden: otherwise
    the caller may read every one."""
    owners = session.exec(
        select(col(IncidentCapture.id), col(IncidentCapture.uid)).where(
            col(IncidentCapture.incident_id) == incident_id
        )
    ).all()
    return {
        capture_id
        for capture_id, uid in owners
        if capture_id is not None and not may_read_stack(caller, uid)
    }


def _trigger(session: Session, incident: IncidentPublic) -> dict[str, Any] | None:
    """The timer whose expiry opened the incident, as the page names it: its rank,
    scope, pid and node (from its row; from its rank's capture if the row was pruned).
    None when the incident names no trigger."""
    timer_id = incident.trigger_timer_id
    if timer_id is None:
        return None
    row = store.timer(session, timer_id)
    if row is not None:
        return {
            "timer_id": timer_id,
            "rank": row.rank,
            "scope_id": row.scope_id,
            "pid": row.pid,
            "node": row.node,
        }
    capture = next((rank for rank in incident.ranks if rank.timer_id == timer_id), None)
    return {
        "timer_id": timer_id,
        "rank": capture.rank if capture else None,
        "scope_id": None,
        "pid": capture.pid if capture else None,
        "node": capture.node if capture else None,
    }


def _groups(
    incident: IncidentPublic, rules: dict[int | None, str], unreadable: set[int]
) -> list[dict[str, Any]]:
    """Each group with its ranks' captures (a suspect with the rule that named it, and
    whether the caller may open its stack);
    ranks in no group (no Python stack: what /proc said of them is in the summary) come
    last, as one more, itself a suspect's group when one of them is."""
    suspects = set(incident.suspects)
    by_group: dict[int | None, list[dict[str, Any]]] = {}
    for capture in incident.ranks:
        suspect = capture.rank in suspects
        entry = capture.model_dump(mode="json") | {
            "suspect": suspect,
            "rule": rules.get(capture.rank) if suspect else None,
            "stack_private": capture.capture_id in unreadable,
        }
        by_group.setdefault(capture.group, []).append(entry)
    groups = [
        {
            "group": group.group,
            "frames": group.frames,
            "suspect": any(rank in suspects for rank in group.ranks),
            "ranks": by_group.pop(group.group, []),
        }
        for group in incident.groups
    ]
    leftover = [entry for entries in by_group.values() for entry in entries]
    if leftover:
        suspect = any(entry["suspect"] for entry in leftover)
        groups.append({"group": None, "frames": [], "suspect": suspect, "ranks": leftover})
    return groups
