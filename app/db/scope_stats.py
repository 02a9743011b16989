"""How long each scope's timers are held (contract 12): percentiles of the recent
healthy holds of a job's scope, the timeout they suggest, and the replay of a proposed
timeout over the recorded history ("what if").

Everything is counted by the database, in SQL both SQLite and PostgreSQL run: a
window of at most ``MAX_WINDOW`` holds is ranked there, the replay is two aggregates
(the window's healthy holds, the hangs of the same span), and a job's scopes are found
by a skip scan of the index, so no history is loaded into Python. On a PostgreSQL
database shared by a fleet (contract 9) the rows are every node's, so the statistics
are fleet-wide.

A *healthy hold* is a timer released by its worker (state and end reason
``released``): acquisition to release, in seconds. A worker that exited before its
deadline also leaves its timer released, with another end reason: how long it ran
before it crashed says nothing of how long the scope takes, so it is left out.

A job is its id *and* its owner (contract 8): a job id is any string a worker chose, so
another user's workers labelled with the same id are another job. The statistics, the
what-if and the learned timeouts count only the holds of one owner: the timers' ``uid``
(``UNKNOWN_OWNER``, -1, for the timers whose uid is unknown, as the jobs table keys it).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    bindparam,
    case,
    func,
    literal,
    select,
    text,
)

from app.db.job_models import UNKNOWN_OWNER, Job
from app.db.job_store import decode_job_cursor
from app.db.models import Timer
from timer_core.engine import TimerState

__all__ = [
    "DEFAULT_WINDOW",
    "JOBS_PER_PAGE",
    "MAX_SCOPES_PER_JOB",
    "MAX_WINDOW",
    "SAFETY_FACTOR",
    "SPREAD_FACTOR",
    "HoldStats",
    "ScopeList",
    "ScopeStats",
    "WhatIf",
    "hold_stats",
    "scope_stats",
    "suggested_timeout",
    "what_if",
]

# The holds the statistics cover: enough for a stable 99th percentile and to span
# many checkpoint intervals of a training loop, few enough to rank in milliseconds.
DEFAULT_WINDOW = 1000
MAX_WINDOW = 100_000

# A job's scopes listed at most (a scope per step, "step-1234", would make one per step).
MAX_SCOPES_PER_JOB = 10_000
# Without a job, GET /scopes examines the jobs active most recently, this many a page
# (from the jobs table's index; ``next`` is the cursor to the following page): every
# job's scopes at once took seconds with 50,000 jobs.
JOBS_PER_PAGE = 100

# The rule (README, "Choosing a timeout"; bench/timeout_rules.py compares it with
# nvidia-resiliency-ext's 5 x max on recorded step times):
#   suggested = max(floor, SAFETY_FACTOR x p99, SPREAD_FACTOR x max)
# p99 x 3 leaves room for the typical step to slow down (a busier node, a slower
# batch) without a kill; 1.5 x max keeps every hold the window has seen, the rare ones
# above p99 (a checkpoint every few hundred steps) among them, well clear of the
# deadline; the floor keeps scheduling noise and a GC pause from killing tiny scopes.
SAFETY_FACTOR = 3.0
SPREAD_FACTOR = 1.5

_timers = Timer.__table__  # type: ignore[attr-defined]
_jobs = Job.__table__  # type: ignore[attr-defined]
_hold = _timers.c.ended_at - _timers.c.acquired_at
_HANGS = (TimerState.EXPIRED.value, TimerState.KILLED.value)


def suggested_timeout(p99: float, longest: float, floor: float) -> float:
    """The timeout the rule gives for holds whose 99th percentile is ``p99`` and
    longest is ``longest``, never below ``floor`` seconds."""
    return max(floor, SAFETY_FACTOR * p99, SPREAD_FACTOR * longest)


@dataclass(frozen=True, slots=True)
class HoldStats:
    """The recent healthy holds of one job's scope, in seconds (nearest-rank
    percentiles: each is one of the holds)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float


class ScopeStats(BaseModel):
    """``GET /scopes``'s item."""

    job_id: str | None
    # Beyond contract 12: whose job (the workers' uid; null if unknown).
    uid: int | None
    scope_id: str
    count: int
    p50: float
    p90: float
    p99: float
    max: float
    suggested_timeout: float
    window: int


class ScopeList(BaseModel):
    """``GET /scopes``'s answer; ``next`` (beyond contract 12): without a job, the
    cursor to the scopes of the jobs active before these, if any."""

    items: list[ScopeStats]
    next: str | None = None


class WhatIf(BaseModel):
    """``GET /scopes/whatif``'s answer: ``timeout`` replayed over the last ``window``
    healthy holds of the job's scope and the hangs since the oldest of them
    (``considered`` in all). ``would_have_killed``: healthy holds longer
    than it. ``hung``: timers that expired or were killed (hangs) and were still held
    at ``timeout``, which it would have caught, ``earlier_by_seconds`` sooner in all
    (the sum over them of how long they were held past it). ``hangs``: every hang
    considered; those not in ``hung`` ended before ``timeout``, and whether they would
    have finished by it the history cannot say."""

    timeout: float
    considered: int
    would_have_killed: int
    hung: int
    earlier_by_seconds: float
    hangs: int


def _of_owner(owner: int, value: Any = None) -> ColumnElement[bool]:
    """The timers of ``owner``: those of an unknown uid have none (null)."""
    column: ColumnElement[int | None] = _timers.c.uid
    if owner == UNKNOWN_OWNER:
        return column.is_(None)
    return column == (owner if value is None else value)


def _of(job: str, owner: int, scope: str) -> list[ColumnElement[bool]]:
    return [_timers.c.job_id == job, _of_owner(owner), _timers.c.scope_id == scope]


def _released() -> list[ColumnElement[bool]]:
    return [
        _timers.c.state == TimerState.RELEASED.value,
        _timers.c.end_reason == TimerState.RELEASED.value,
    ]


def _one_job(job: str | None) -> ColumnElement[bool]:
    # The timers of no job form one group of their own, as GROUP BY makes them.
    column: ColumnElement[str | None] = _timers.c.job_id
    return column.is_(None) if job is None else column == job


def _hold_stats_query(
    of_job: ColumnElement[bool], of_owner: ColumnElement[bool]
) -> Select[int, float, float, float, Any]:
    """The statistics of the newest ``:window`` healthy holds of ``:scope`` in the job
    ``of_job`` names, of the owner ``of_owner`` names: read newest first from the
    index, ranked by length, each percentile read at its rank. Built once (per kind of
    job and owner): it is asked on every "auto" arming whose answer is not cached."""
    recent = (
        select(_hold.label("hold"))
        .where(of_job, of_owner, _timers.c.scope_id == bindparam("scope"), *_released())
        .order_by(_timers.c.ended_at.desc())
        .limit(bindparam("window", type_=Integer))
        .subquery()
    )
    ranked = select(
        recent.c.hold,
        func.row_number().over(order_by=recent.c.hold).label("pos"),
        func.count().over().label("n"),
    ).subquery()

    def at(percent: int) -> ColumnElement[float]:
        # Nearest rank: the smallest hold whose rank is at least percent% of n
        # (integers, so 99% of 100 is exactly rank 99).
        return func.min(case((ranked.c.pos * 100 >= ranked.c.n * literal(percent), ranked.c.hold)))

    return select(func.count(), at(50), at(90), at(99), func.max(ranked.c.hold))


# By (no job, unknown owner).
_HOLD_STATS = {
    (no_job, unknown): _hold_stats_query(
        _timers.c.job_id.is_(None) if no_job else _timers.c.job_id == bindparam("job"),
        _of_owner(UNKNOWN_OWNER if unknown else 0, bindparam("uid")),
    )
    for no_job in (False, True)
    for unknown in (False, True)
}


def hold_stats(
    connection: Connection, job: str | None, owner: int, scope: str, window: int
) -> HoldStats | None:
    """The last ``window`` healthy holds of ``scope`` in ``job`` (None: timers of no
    job) of ``owner``'s workers, or None if it has none: one statement, on the index
    alone."""
    query = _HOLD_STATS[(job is None, owner == UNKNOWN_OWNER)]
    params: dict[str, object] = {"scope": scope, "window": window}
    if job is not None:
        params["job"] = job
    if owner != UNKNOWN_OWNER:
        params["uid"] = owner
    row = connection.execute(query, params).one()
    count = int(row[0])
    if count == 0:
        return None
    return HoldStats(count, float(row[1]), float(row[2]), float(row[3]), float(row[4]))


def _of_sql(job: str | None, owner: int) -> str:
    of_job = "job_id IS NULL" if job is None else "job_id = :job"
    return f"{of_job} AND " + ("uid IS NULL" if owner == UNKNOWN_OWNER else "uid = :uid")


def _scopes(connection: Connection, job: str | None, owner: int) -> list[tuple[str, float | None]]:
    """The scopes ``job`` (None: timers of no job) of ``owner`` has timers of, each with
    when one was last released: a skip scan of the index, one seek per scope, however
    many timers each scope has (GROUP BY would read them all)."""
    of = _of_sql(job, owner)
    rows = connection.execute(
        text(
            "WITH RECURSIVE s(scope_id) AS ("
            f" SELECT min(scope_id) FROM timers WHERE {of}"
            " UNION ALL"
            f" SELECT (SELECT min(scope_id) FROM timers WHERE {of} AND scope_id > s.scope_id)"
            " FROM s WHERE s.scope_id IS NOT NULL)"
            " SELECT scope_id, (SELECT max(ended_at) FROM timers"
            f"  WHERE {of} AND scope_id = s.scope_id AND state = 'released')"
            " FROM s WHERE scope_id IS NOT NULL LIMIT :most"
        ),
        {"job": job, "uid": owner, "most": MAX_SCOPES_PER_JOB},
    ).all()
    return [(scope_id, last) for scope_id, last in rows]


def _owners(connection: Connection, job: str | None) -> list[int]:
    """Whose workers have timers of ``job`` (None: of no job), at most JOBS_PER_PAGE:
    a skip scan of the index over the uids, and one seek for the unknown one."""
    of_job = "job_id IS NULL" if job is None else "job_id = :job"
    rows = connection.execute(
        text(
            "WITH RECURSIVE u(uid) AS ("
            f" SELECT min(uid) FROM timers WHERE {of_job}"
            " UNION ALL"
            f" SELECT (SELECT min(uid) FROM timers WHERE {of_job} AND uid > u.uid)"
            " FROM u WHERE u.uid IS NOT NULL)"
            " SELECT uid FROM u WHERE uid IS NOT NULL LIMIT :most"
        ),
        {"job": job, "most": JOBS_PER_PAGE},
    ).all()
    owners = [int(uid) for (uid,) in rows]
    of_unknown = [_one_job(job), _timers.c.uid.is_(None)]
    if connection.execute(select(_timers.c.id).where(*of_unknown).limit(1)).first() is not None:
        owners.append(UNKNOWN_OWNER)
    return owners


def _recent_jobs(
    connection: Connection, owner: int | None, cursor: str | None
) -> tuple[list[tuple[str | None, int]], str | None]:
    """The jobs (id, owner) active most recently, JOBS_PER_PAGE of them after
    ``cursor``, from the jobs table's index, and the cursor to the next ones; the first
    page also has the timers of no job. Raises job_store.BadCursor."""
    query = select(_jobs.c.job_id, _jobs.c.uid, _jobs.c.last_seen)
    if owner is not None:
        query = query.where(_jobs.c.uid == owner)
    if cursor is not None:
        last_seen, job_id, uid = decode_job_cursor(cursor)
        query = query.where(
            (_jobs.c.last_seen < last_seen)
            | ((_jobs.c.last_seen == last_seen) & (_jobs.c.job_id < job_id))
            | ((_jobs.c.last_seen == last_seen) & (_jobs.c.job_id == job_id) & (_jobs.c.uid < uid))
        )
    order = (_jobs.c.last_seen.desc(), _jobs.c.job_id.desc(), _jobs.c.uid.desc())
    rows = connection.execute(query.order_by(*order).limit(JOBS_PER_PAGE + 1)).all()
    jobs: list[tuple[str | None, int]] = [(job, int(uid)) for job, uid, _ in rows[:JOBS_PER_PAGE]]
    after = None
    if len(rows) > JOBS_PER_PAGE:
        last = rows[JOBS_PER_PAGE - 1]
        after = base64.urlsafe_b64encode(
            json.dumps([last.last_seen, last.job_id, last.uid]).encode()
        ).decode()
    if cursor is None:
        unlabelled = _owners(connection, None)
        jobs += [(None, uid) for uid in unlabelled if owner in (None, uid)]
    return jobs, after


def scope_stats(
    connection: Connection,
    job: str | None,
    owner: int | None,
    scope: str | None,
    window: int,
    floor: float,
    limit: int,
    cursor: str | None = None,
) -> ScopeList:
    """The statistics of each scope with healthy holds, the most recently released
    first, at most ``limit`` scopes: of ``job`` (every owner's, each its own item, or
    only ``owner``'s) and only ``scope``, when given. Without a job, of the jobs active
    most recently (a page of them, after ``cursor``). Raises job_store.BadCursor."""
    after = None
    if job is not None:
        owners = [owner] if owner is not None else _owners(connection, job)
        groups: list[tuple[str | None, int]] = [(job, uid) for uid in owners]
    else:
        groups, after = _recent_jobs(connection, owner, cursor)
    released: list[tuple[float, str | None, int, str]] = []
    for job_id, uid in groups:
        for scope_id, last in _scopes(connection, job_id, uid):
            if last is not None and scope in (None, scope_id):
                released.append((last, job_id, uid, scope_id))
    released.sort(key=lambda item: (-item[0], item[3], item[2]))
    items = []
    for _, job_id, uid, scope_id in released[:limit]:
        stats = hold_stats(connection, job_id, uid, scope_id, window)
        if stats is None:  # only workers that exited early: nothing to learn from
            continue
        items.append(
            ScopeStats(
                job_id=job_id,
                uid=None if uid == UNKNOWN_OWNER else uid,
                scope_id=scope_id,
                count=stats.count,
                p50=stats.p50,
                p90=stats.p90,
                p99=stats.p99,
                max=stats.max,
                suggested_timeout=suggested_timeout(stats.p99, stats.max, floor),
                window=window,
            )
        )
    return ScopeList(items=items, next=after)


def what_if(
    connection: Connection,
    job: str,
    owner: int,
    scope: str,
    timeout: float,
    window: int = MAX_WINDOW,
) -> WhatIf:
    """Replay ``timeout`` over the last ``window`` healthy holds of ``scope`` in
    ``job`` of ``owner``'s workers and every hang since the oldest of them: two
    aggregates, each read newest first by the index."""
    zero = literal(0)
    recent = (
        select(_timers.c.ended_at, _hold.label("hold"))
        .where(*_of(job, owner, scope), *_released())
        .order_by(_timers.c.ended_at.desc())
        .limit(window)
        .subquery()
    )
    healthy, killed, since = connection.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((recent.c.hold > timeout, 1), else_=zero)), 0),
            func.min(recent.c.ended_at),
        )
    ).one()
    hangs = [*_of(job, owner, scope), _timers.c.state.in_(_HANGS)]
    if healthy >= window:  # the window is full: the hangs of the same span
        hangs.append(_timers.c.ended_at >= since)
    caught = _hold >= timeout
    hung, caught_count, earlier = connection.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((caught, 1), else_=zero)), 0),
            func.coalesce(func.sum(case((caught, _hold - timeout), else_=literal(0.0))), 0.0),
        ).where(*hangs)
    ).one()
    return WhatIf(
        timeout=timeout,
        considered=int(healthy) + int(hung),
        would_have_killed=int(killed),
        hung=int(caught_count),
        earlier_by_seconds=float(earlier),
        hangs=int(hung),
    )
