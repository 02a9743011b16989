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
"""

from __future__ import annotations

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

from app.db.models import Timer
from timer_core.engine import TimerState

__all__ = [
    "DEFAULT_WINDOW",
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
    scope_id: str
    count: int
    p50: float
    p90: float
    p99: float
    max: float
    suggested_timeout: float
    window: int


class ScopeList(BaseModel):
    """``GET /scopes``'s answer."""

    items: list[ScopeStats]


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


def _of(job: str | None, scope: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if job is not None:
        conditions.append(_timers.c.job_id == job)
    if scope is not None:
        conditions.append(_timers.c.scope_id == scope)
    return conditions


def _released() -> list[ColumnElement[bool]]:
    return [
        _timers.c.state == TimerState.RELEASED.value,
        _timers.c.end_reason == TimerState.RELEASED.value,
    ]


def _one_job(job: str | None) -> ColumnElement[bool]:
    # The timers of no job form one group of their own, as GROUP BY makes them.
    column: ColumnElement[str | None] = _timers.c.job_id
    return column.is_(None) if job is None else column == job


def _hold_stats_query(of_job: ColumnElement[bool]) -> Select[int, float, float, float, Any]:
    """The statistics of the newest ``:window`` healthy holds of ``:scope`` in the job
    ``of_job`` names: read newest first from the index, ranked by length, each
    percentile read at its rank. Built once (per kind of job): it is asked on every
    "auto" arming whose answer is not cached."""
    recent = (
        select(_hold.label("hold"))
        .where(of_job, _timers.c.scope_id == bindparam("scope"), *_released())
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


_HOLD_STATS = _hold_stats_query(_timers.c.job_id == bindparam("job"))
_HOLD_STATS_NO_JOB = _hold_stats_query(_timers.c.job_id.is_(None))


def hold_stats(
    connection: Connection, job: str | None, scope: str, window: int
) -> HoldStats | None:
    """The last ``window`` healthy holds of ``scope`` in ``job`` (None: timers of no
    job), or None if it has none: one statement, on the index alone."""
    query = _HOLD_STATS_NO_JOB if job is None else _HOLD_STATS
    params: dict[str, object] = {"scope": scope, "window": window}
    if job is not None:
        params["job"] = job
    row = connection.execute(query, params).one()
    count = int(row[0])
    if count == 0:
        return None
    return HoldStats(count, float(row[1]), float(row[2]), float(row[3]), float(row[4]))


def _scopes(connection: Connection, job: str | None) -> list[tuple[str, float | None]]:
    """The scopes ``job`` (None: timers of no job) has timers of, each with when one was
    last released: a skip scan of the index, one seek per scope, however many timers
    each scope has (GROUP BY would read them all)."""
    of_job = "job_id IS NULL" if job is None else "job_id = :job"
    rows = connection.execute(
        text(
            "WITH RECURSIVE s(scope_id) AS ("
            f" SELECT min(scope_id) FROM timers WHERE {of_job}"
            " UNION ALL"
            f" SELECT (SELECT min(scope_id) FROM timers WHERE {of_job} AND scope_id > s.scope_id)"
            " FROM s WHERE s.scope_id IS NOT NULL)"
            " SELECT scope_id, (SELECT max(ended_at) FROM timers"
            f"  WHERE {of_job} AND scope_id = s.scope_id AND state = 'released')"
            " FROM s WHERE scope_id IS NOT NULL LIMIT :most"
        ),
        {"job": job, "most": MAX_SCOPES_PER_JOB},
    ).all()
    return [(scope_id, last) for scope_id, last in rows]


def _jobs(connection: Connection) -> list[str | None]:
    """Every job with timers, and None if some timers have no job: a skip scan too."""
    rows = connection.execute(
        text(
            "WITH RECURSIVE j(job_id) AS ("
            " SELECT min(job_id) FROM timers"
            " UNION ALL"
            " SELECT (SELECT min(job_id) FROM timers WHERE job_id > j.job_id)"
            " FROM j WHERE j.job_id IS NOT NULL)"
            " SELECT job_id FROM j WHERE job_id IS NOT NULL"
        )
    ).all()
    jobs: list[str | None] = [job_id for (job_id,) in rows]
    unlabelled = connection.execute(select(_timers.c.id).where(_one_job(None)).limit(1)).first()
    return [*jobs, None] if unlabelled is not None else jobs


def scope_stats(
    connection: Connection,
    job: str | None,
    scope: str | None,
    window: int,
    floor: float,
    limit: int,
) -> list[ScopeStats]:
    """The statistics of each scope with healthy holds (of ``job``, and only ``scope``,
    when given), the most recently released first, at most ``limit`` scopes."""
    released: list[tuple[float, str | None, str]] = []
    for job_id in [job] if job is not None else _jobs(connection):
        for scope_id, last in _scopes(connection, job_id):
            if last is not None and scope in (None, scope_id):
                released.append((last, job_id, scope_id))
    released.sort(key=lambda pair: (-pair[0], pair[2]))
    items = []
    for _, job_id, scope_id in released[:limit]:
        stats = hold_stats(connection, job_id, scope_id, window)
        if stats is None:  # only workers that exited early: nothing to learn from
            continue
        items.append(
            ScopeStats(
                job_id=job_id,
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
    return items


def what_if(
    connection: Connection,
    job: str | None,
    scope: str,
    timeout: float,
    window: int = MAX_WINDOW,
) -> WhatIf:
    """Replay ``timeout`` over the last ``window`` healthy holds of ``scope`` (in
    ``job``, or in every job when None) and every hang since the oldest of them: two
    aggregates, each read newest first by the index."""
    zero = literal(0)
    recent = (
        select(_timers.c.ended_at, _hold.label("hold"))
        .where(*_of(job, scope), *_released())
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
    hangs = [*_of(job, scope), _timers.c.state.in_(_HANGS)]
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
