"""What the jobs and incidents pages show: the dashboard's jobs and recent incidents,
one job's grid of ranks, and one incident's groups with their ranks. The API's reads
(``job_store``) shown as the caller may see them (``incident_privacy``), so a page
never shows more than the API would answer the same caller."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.access.callers import Caller
from app.access.incident_privacy import visible
from app.db import job_store
from app.db.job_models import IncidentPublic, job_owner
from app.web.collective_views import collective_view, suspect_rules
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
    return {
        "job": detail.model_dump(mode="json"),
        # The ranks whose worker outlived its SIGKILL (contract 10), by timer id.
        "unkillable": unkillable_marks(session, [rank.timer_id for rank in detail.ranks]),
        "incidents": _incidents(session, caller, job_id, _JOB_INCIDENTS_SHOWN, owner),
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
    return {
        "incident": incident,
        "frames_hidden": hidden,
        "groups": _groups(shown, rules),
        "rules": [(rank, rules.get(rank)) for rank in shown.suspects],
        "collectives": collective_view(incident, hidden),
    }


def _groups(incident: IncidentPublic, rules: dict[int | None, str]) -> list[dict[str, Any]]:
    """Each group with its ranks' captures (a suspect with the rule that named it);
    ranks in no group (no Python stack: what /proc said of them is in the summary) come
    last, as one more, itself a suspect's group when one of them is."""
    suspects = set(incident.suspects)
    by_group: dict[int | None, list[dict[str, Any]]] = {}
    for capture in incident.ranks:
        suspect = capture.rank in suspects
        entry = capture.model_dump(mode="json") | {
            "suspect": suspect,
            "rule": rules.get(capture.rank) if suspect else None,
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
