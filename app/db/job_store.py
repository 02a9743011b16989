"""The reads of jobs and incidents (contract 8), one function per question, each taking
the caller's Session, in the style of ``store``. The recorder keeps the ``jobs`` and
``incidents`` tables current; what only the timers know (ranks seen, active timers,
nodes) is counted here, for one page of jobs at a time."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from app.db.collective_models import collectives_public, findings_public
from app.db.job_models import (
    UNKNOWN_OWNER,
    Incident,
    IncidentCapture,
    IncidentCapturePublic,
    IncidentGroup,
    IncidentPublic,
    Job,
    JobDetail,
    JobPublic,
    JobRank,
)
from app.db.models import Timer
from app.db.pagination import MAX_PAGE_BYTES, json_size_bound
from timer_core.diagnosis import evidence_method
from timer_core.engine import TimerState

__all__ = [
    "JOB_CURSOR_PATTERN",
    "BadCursor",
    "IncidentRow",
    "SeveralOwners",
    "capture",
    "decode_job_cursor",
    "find_job",
    "incident",
    "incidents_page",
    "job_detail",
    "job_owner_for",
    "jobs_page",
]

# A job cursor is the (last_seen, job_id, uid) of the page's last job, as base64url
# JSON: job ids are arbitrary strings, so they cannot be spliced into a cursor as they
# are. (A cursor of before the owner, [last_seen, job_id], still works.)
JOB_CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,1400}={0,2}$"

# What a rank shows of its latest timer under the same names.
_RANK_FIELDS = tuple(name for name in JobRank.model_fields if name not in ("timer_id", "last_seen"))


# Incidents read (with their captures) per query while a page is filled.
_INCIDENTS_READ_AT_ONCE = 20
# A job's ranks fetched at a time while its detail is filled.
_RANKS_READ_AT_ONCE = 500


class BadCursor(ValueError):
    """A cursor this service did not hand out."""


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """An incident as answered, with the owner of each captured rank's stack: the
    router decides from them whether the caller may see the frames."""

    public: IncidentPublic
    owners: frozenset[int | None]


def _encode_job_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(
        json.dumps([job.last_seen, job.job_id, job.uid]).encode()
    ).decode()


def decode_job_cursor(cursor: str) -> tuple[float, str, int]:
    try:
        last_seen, job_id, *owner = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise BadCursor(f"cursor {cursor!r} is not one this service handed out") from None
    # Without an owner (a cursor from before 0009): after every owner of that job id.
    uid = owner[0] if owner else UNKNOWN_OWNER - 1
    if (
        not isinstance(last_seen, int | float)
        or not isinstance(job_id, str)
        or len(owner) > 1
        or isinstance(uid, bool)
        or not isinstance(uid, int)
    ):
        raise BadCursor(f"cursor {cursor!r} is not one this service handed out")
    return float(last_seen), job_id, uid


class SeveralOwners(LookupError):
    """A job id that several users' jobs carry, and nothing to choose between them."""

    def __init__(self, job_id: str, owners: list[int]) -> None:
        self.owners = owners
        shown = ", ".join("unknown" if uid == UNKNOWN_OWNER else str(uid) for uid in owners)
        super().__init__(
            f"job {job_id!r} is claimed by the workers of several users (uids {shown}): "
            f"say whose with ?uid=, e.g. ?uid={owners[0]}"
        )


def job_owner_for(
    session: Session, job_id: str, uid: int | None, caller_uid: int | None
) -> int | None:
    """Whose job ``job_id`` names for this caller: ``uid`` if given; else the caller's
    own, if it has one; else the only owner. None: no such job. Raises SeveralOwners
    when several users have one and the caller is none of them."""
    owners = sorted(session.exec(select(col(Job.uid)).where(col(Job.job_id) == job_id)).all())
    if uid is not None:
        return uid if uid in owners else None
    if caller_uid is not None and caller_uid in owners:
        return caller_uid
    if len(owners) > 1:
        raise SeveralOwners(job_id, owners)
    return owners[0] if owners else None


def find_job(
    session: Session, job_id: str, uid: int | None, caller_uid: int | None
) -> JobDetail | None:
    """The job ``job_id`` names for this caller (``job_owner_for``), with its ranks;
    None if there is none. Raises SeveralOwners."""
    owner = job_owner_for(session, job_id, uid, caller_uid)
    return None if owner is None else job_detail(session, job_id, owner)


def jobs_page(
    session: Session, limit: int, cursor: str | None
) -> tuple[list[JobPublic], str | None]:
    """Newest activity first; the cursor is the last job of the page before."""
    query = select(Job).order_by(
        col(Job.last_seen).desc(), col(Job.job_id).desc(), col(Job.uid).desc()
    )
    if cursor is not None:
        last_seen, job_id, uid = decode_job_cursor(cursor)
        query = query.where(
            or_(
                col(Job.last_seen) < last_seen,
                and_(col(Job.last_seen) == last_seen, col(Job.job_id) < job_id),
                and_(
                    col(Job.last_seen) == last_seen,
                    col(Job.job_id) == job_id,
                    col(Job.uid) < uid,
                ),
            )
        )
    rows = session.exec(query.limit(limit + 1)).all()
    page = list(rows[:limit])
    more = len(rows) > limit
    last = page[-1] if page else None
    after = _encode_job_cursor(last) if more and last else None
    return _with_timer_counts(session, page), after


def _with_timer_counts(session: Session, jobs: Sequence[Job]) -> list[JobPublic]:
    """Ranks seen, active timers and nodes of ``jobs``, from one GROUP BY over their
    timers (each job's own: of its id and its owner). Grouped by rank and node too,
    and folded here: a rank that moved to another node (an elastic restart) is still
    one rank, which COUNT(DISTINCT) per node would count twice, and a list of nodes has
    no portable SQL aggregate."""
    keys = [(job.job_id, job.uid) for job in jobs]
    ranks: dict[tuple[str, int], set[int]] = {key: set() for key in keys}
    nodes: dict[tuple[str, int], set[str]] = {key: set() for key in keys}
    active: dict[tuple[str, int], int] = dict.fromkeys(keys, 0)
    if jobs:
        is_active = case((col(Timer.state) == TimerState.ACTIVE, 1), else_=0)
        owner = _timer_owner()
        # Five columns: more than sqlmodel's select() is typed for, so SQLAlchemy's.
        grouped = (
            session.connection()
            .execute(
                sa_select(
                    col(Timer.job_id), owner, col(Timer.rank), col(Timer.node), func.sum(is_active)
                )
                .where(col(Timer.job_id).in_({job.job_id for job in jobs}))
                .group_by(col(Timer.job_id), owner, col(Timer.rank), col(Timer.node))
            )
            .all()
        )
        for job_id, uid, rank, node, count in grouped:
            assert job_id is not None
            key = (job_id, uid)
            if key not in ranks:
                continue  # another owner's timers of that id, on another page
            if rank is not None:
                ranks[key].add(rank)
            nodes[key].add(node)
            active[key] += int(count or 0)
    return [
        JobPublic(
            job_id=job.job_id,
            uid=None if job.uid == UNKNOWN_OWNER else job.uid,
            world_size=job.world_size,
            ranks_seen=len(ranks[job.job_id, job.uid]),
            active_timers=active[job.job_id, job.uid],
            nodes=sorted(nodes[job.job_id, job.uid]),
            first_seen=job.first_seen,
            last_seen=job.last_seen,
            incidents=job.incidents,
        )
        for job in jobs
    ]


def _timer_owner() -> Any:
    """A timer's job owner, as the jobs table keys it (UNKNOWN_OWNER for a null uid)."""
    return func.coalesce(col(Timer.uid), UNKNOWN_OWNER)


def job_detail(session: Session, job_id: str, uid: int) -> JobDetail | None:
    """The job of this id and owner with the latest timer of each of its ranks (timers
    without a rank count as one rank, shown as null), by rank: never another owner's
    worker that claims the same id."""
    job = session.get(Job, (job_id, uid))
    if job is None:
        return None
    [public] = _with_timer_counts(session, [job])
    # The latest by acquisition, ties by id: ids are opaque across a fleet.
    newest = (
        func.row_number()
        .over(
            partition_by=col(Timer.rank),
            order_by=(col(Timer.acquired_at).desc(), col(Timer.id).desc()),
        )
        .label("newest")
    )
    latest = (
        select(col(Timer.id).label("id"), newest)
        .where(col(Timer.job_id) == job_id, _timer_owner() == uid)
        .subquery()
    )
    query = (
        select(Timer)
        .join(latest, col(Timer.id) == latest.c.id)
        .where(latest.c.newest == 1)
        .order_by(col(Timer.rank).is_(None), col(Timer.rank))
    )
    ranks: list[JobRank] = []
    size = 0
    cut = False
    # Streamed, and cut at about a page's bytes: the ranks past it are counted, not read.
    result = session.exec(query.execution_options(yield_per=_RANKS_READ_AT_ONCE))
    try:
        for row in result:
            if size >= MAX_PAGE_BYTES:
                cut = True
                break
            last_seen = row.ended_at if row.ended_at is not None else row.acquired_at
            shared = {name: getattr(row, name) for name in _RANK_FIELDS}
            ranks.append(JobRank(**shared, timer_id=row.id, last_seen=last_seen))
            size += json_size_bound(row)
    finally:
        result.close()
    omitted = 0
    if cut:
        every_rank = select(func.count()).select_from(latest).where(latest.c.newest == 1)
        omitted = session.exec(every_rank).one() - len(ranks)
    return JobDetail(**public.model_dump(), ranks=ranks, ranks_omitted=omitted)


def incidents_page(
    session: Session, job: str | None, limit: int, cursor: str | None, uid: int | None = None
) -> tuple[list[IncidentRow], str | None]:
    """Newest first (ids grow as incidents open); the cursor is the last id before.
    With ``uid`` (a job's owner), only that owner's incidents of the job.

    Fewer than ``limit`` when they would pass about ``MAX_PAGE_BYTES`` of JSON, as any
    page: an incident holds the frames of its ranks' stacks (up to 256 KiB each, text
    a worker chose), so 1,000 of them made one answer of hundreds of MB, built whole in
    memory. Incidents are read a few at a time, so rows past the cut are never read."""
    query = select(Incident).order_by(col(Incident.id).desc())
    if job is not None:
        query = query.where(col(Incident.job_id) == job)
    if uid is not None:
        query = query.where(func.coalesce(col(Incident.uid), UNKNOWN_OWNER) == uid)
    page: list[IncidentRow] = []
    size = 0
    before = cursor
    while True:
        # One more than the page still needs: that one says whether a next page exists.
        wanted = min(_INCIDENTS_READ_AT_ONCE, limit - len(page) + 1)
        chunk_query = query if before is None else query.where(col(Incident.id) < int(before))
        chunk = session.exec(chunk_query.limit(wanted)).all()
        for row in _with_captures(session, chunk):
            if len(page) == limit or size >= MAX_PAGE_BYTES:
                return page, str(page[-1].public.id)
            page.append(row)
            size += len(row.public.model_dump_json())
        if len(chunk) < wanted:
            return page, None
        before = str(chunk[-1].id)


def incident(session: Session, incident_id: int) -> IncidentRow | None:
    row = session.get(Incident, incident_id)
    return None if row is None else _with_captures(session, [row])[0]


def capture(session: Session, incident_id: int, capture_id: int) -> IncidentCapture | None:
    """One rank's capture, if it belongs to that incident."""
    row = session.get(IncidentCapture, capture_id)
    return row if row is not None and row.incident_id == incident_id else None


def _with_captures(session: Session, incidents: Sequence[Incident]) -> list[IncidentRow]:
    """``incidents`` with their ranks, from one query over their captures."""
    by_incident: dict[int, list[IncidentCapture]] = {}
    ids = [row.id for row in incidents if row.id is not None]
    if ids:
        captures = session.exec(
            select(IncidentCapture)
            .where(col(IncidentCapture.incident_id).in_(ids))
            .order_by(col(IncidentCapture.rank).is_(None), col(IncidentCapture.rank))
        ).all()
        for item in captures:
            by_incident.setdefault(item.incident_id, []).append(item)
    answered = []
    for row in incidents:
        assert row.id is not None
        captured = by_incident.get(row.id, [])
        public = IncidentPublic(
            id=row.id,
            job_id=row.job_id,
            opened_at=row.opened_at,
            nodes=row.nodes,
            trigger_timer_id=row.trigger_timer_id,
            ranks=[_capture_public(item) for item in captured],
            groups=[IncidentGroup.model_validate(group) for group in row.groups],
            suspects=row.suspects,
            summary=row.summary,
            collective_findings=findings_public(row.collective_findings),
            suspect_rules=_rules(row.suspect_rules),
        )
        answered.append(IncidentRow(public, frozenset(item.uid for item in captured)))
    return answered


def _capture_public(row: IncidentCapture) -> IncidentCapturePublic:
    assert row.id is not None
    return IncidentCapturePublic(
        rank=row.rank,
        node=row.node,
        pid=row.pid,
        timer_id=row.timer_id,
        outcome=row.outcome,
        group=row.group_number,
        capture_id=row.id,
        local_rank=row.local_rank,
        stack_method=row.stack_method,
        stack_note=row.stack_note,
        method=evidence_method(row.stack_method),
        collectives=collectives_public(row.rank, row.collectives),
    )


def _rules(stored: object) -> dict[str, str]:
    """An incident row's ``suspect_rules``; entries of another shape are left out."""
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}
