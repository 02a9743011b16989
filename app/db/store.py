"""The service's reads of its database, one function per question, each taking the
caller's Session: the routers, the live feed and start-up ask here instead of
building SQL of their own. (The recorder's batched writes are in ``event_rows``.)"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, TypeVar

from sqlalchemy import Connection, Integer, cast, func, insert, update
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from app.db import job_models  # noqa: F401  (registers the jobs and incidents tables)
from app.db.models import Event, Loss, Stack, Timer
from timer_core.engine import Timer as LiveTimer
from timer_core.engine import TimerState

__all__ = [
    "TimerFilter",
    "acknowledge_losses",
    "active_timers",
    "event_counts_per_minute",
    "events_query",
    "fleet_active",
    "fleet_recently_ended",
    "insert_losses",
    "killed_count",
    "latest_losses",
    "newest_events",
    "recently_ended",
    "stack",
    "stack_facts",
    "timer",
    "timer_recorded",
    "unacknowledged_losses",
    "unkillable_details",
]

_losses = Loss.__table__  # type: ignore[attr-defined]


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def timer(session: Session, timer_id: int) -> Timer | None:
    return session.get(Timer, timer_id)


def stack(session: Session, timer_id: int) -> Stack | None:
    return session.get(Stack, timer_id)


def timer_recorded(connection: Connection, timer_id: int) -> bool:
    """Whether the timer's row is in the database (its acquisition was written)."""
    found = connection.execute(select(Timer.id).where(Timer.id == timer_id)).first()
    return found is not None


def active_timers(session: Session, node: str) -> Sequence[Timer]:
    """The active timers this node armed (or that were armed before timers had a node):
    on a shared database, another node's timers are that node's to re-arm."""
    return session.exec(
        select(Timer).where(col(Timer.state) == TimerState.ACTIVE, col(Timer.node).in_((node, "")))
    ).all()


def recently_ended(session: Session, limit: int) -> Sequence[Timer]:
    """The timers that ended last, newest first."""
    return session.exec(
        select(Timer)
        .where(col(Timer.state) != TimerState.ACTIVE)
        .order_by(col(Timer.ended_at).desc())
        .limit(limit)
    ).all()


def killed_count(session: Session) -> int:
    query = select(func.count()).select_from(Timer).where(col(Timer.state) == TimerState.KILLED)
    return int(session.exec(query).one())


def event_counts_per_minute(
    session: Session, since: float, kinds: Sequence[str]
) -> list[tuple[str, int, int]]:
    """``(kind, minute number, count)`` of the events of ``kinds`` since ``since``.
    Counted by the database: an hour of heavy traffic is millions of rows."""
    minute = col(Event.at) / 60
    # SQLite's cast truncates; PostgreSQL's rounds (minute 1.6 would count as minute 2).
    whole = cast(minute if _is_sqlite(session) else func.floor(minute), Integer)
    rows = session.exec(
        select(col(Event.kind), whole, func.count())
        .where(col(Event.at) >= since, col(Event.kind).in_(list(kinds)))
        .group_by(col(Event.kind), whole)
    ).all()
    return [(kind, int(number), int(count)) for kind, number, count in rows]


def newest_events(session: Session, timer_id: int, limit: int) -> Sequence[Event]:
    """A timer's newest ``limit`` events, newest first."""
    return session.exec(
        select(Event).where(Event.timer_id == timer_id).order_by(col(Event.id).desc()).limit(limit)
    ).all()


# Timer ids per query of their unkillable events (SQLite's bound parameters are few).
_IDS_PER_QUERY = 500


def unkillable_details(session: Session, timer_ids: Sequence[int]) -> dict[int, list[Any]]:
    """The details of these timers' ``unkillable`` events, oldest first, by timer (only
    those that have any): through the index of the event log by kind."""
    found: dict[int, list[Any]] = {}
    for start in range(0, len(timer_ids), _IDS_PER_QUERY):
        chunk = list(timer_ids[start : start + _IDS_PER_QUERY])
        rows = session.exec(
            select(Event.timer_id, Event.detail)
            .where(Event.kind == "unkillable", col(Event.timer_id).in_(chunk))
            .order_by(col(Event.id))
        ).all()
        for timer_id, detail in rows:
            if timer_id is not None:
                found.setdefault(timer_id, []).append(detail)
    return found


def stack_facts(session: Session, timer_id: int) -> tuple[str, float, bool, list[str]] | None:
    """How a timer's stack was captured (method, seconds, truncated, notes), not its text."""
    row = session.exec(
        select(Stack.method, Stack.seconds, Stack.truncated, Stack.notes).where(
            Stack.timer_id == timer_id
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2], list(row[3]))


def _other_nodes(
    query: SelectOfScalar[Timer], local: str | None, node: str | None
) -> SelectOfScalar[Timer]:
    # ``local`` None means every node (a hub); "" is a timer armed before timers had a
    # node, the local node's own (as ``active_timers`` counts it).
    if local is not None:
        query = query.where(col(Timer.node).not_in((local, "")))
    if node is not None:
        query = query.where(Timer.node == node)
    return query


def fleet_active(
    session: Session,
    local: str | None,
    node: str | None,
    pid: int | None,
    scope: str | None,
    limit: int,
) -> tuple[Sequence[Timer], int]:
    """The active timers of nodes other than ``local`` (every node if None), soonest
    deadline first, at most ``limit``, and how many match in all: the dashboard's
    view of timers another node's reaper holds."""
    query = _other_nodes(select(Timer).where(Timer.state == TimerState.ACTIVE), local, node)
    if pid is not None:
        query = query.where(Timer.pid == pid)
    if scope is not None:
        # A substring, case and all, as the engine's reader matches this node's (LIKE
        # ignores case on SQLite).
        position = func.instr if _is_sqlite(session) else func.strpos
        query = query.where(position(col(Timer.scope_id), scope) > 0)
    rows = session.exec(query.order_by(col(Timer.expiration_time), col(Timer.id)).limit(limit))
    shown = rows.all()
    if len(shown) < limit:
        return shown, len(shown)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    return shown, int(total)


def fleet_recently_ended(
    session: Session, local: str | None, node: str | None, limit: int
) -> Sequence[Timer]:
    """The timers of nodes other than ``local`` (every node if None) that ended last,
    newest first: the same window of the newest ends the live feed keeps."""
    query = _other_nodes(select(Timer).where(Timer.state != TimerState.ACTIVE), local, node)
    return session.exec(query.order_by(col(Timer.ended_at).desc()).limit(limit)).all()


@dataclass(frozen=True, slots=True)
class TimerFilter:
    """The filters of ``GET /timers``, built once per request and answered by the
    database (``query``) or, while it is away, by this node's engine (``matches``)."""

    state: TimerState | None = None
    pid: int | None = None
    scope: str | None = None
    job: str | None = None
    rank: int | None = None
    node: str | None = None
    restart_count: int | None = None

    def query(self) -> SelectOfScalar[Timer]:
        """The matching rows, for ``paginate``."""
        return _where_equal(
            select(Timer), *((column, getattr(self, name)) for name, column, _ in _TIMER_FIELDS)
        )

    def matches(self, timer: LiveTimer) -> bool:
        """Whether a timer of the engine passes every filter given."""
        return all(
            getattr(self, name) is None or read(timer) == getattr(self, name)
            for name, _, read in _TIMER_FIELDS
        )


# Each filter: its name, the column it narrows, and where the engine's timer keeps it.
# A new filter is one field above and one row here.
_TIMER_FIELDS: tuple[tuple[str, Any, Callable[[LiveTimer], object]], ...] = (
    ("job", Timer.job_id, attrgetter("labels.job_id")),
    ("rank", Timer.rank, attrgetter("labels.rank")),
    ("restart_count", Timer.restart_count, attrgetter("labels.restart_count")),
    ("node", Timer.node, attrgetter("node")),
    ("state", Timer.state, attrgetter("state")),
    ("pid", Timer.pid, attrgetter("pid")),
    ("scope", Timer.scope_id, attrgetter("scope_id")),
)


def events_query(
    timer_id: int | None, kind: str | None, node: str | None = None, after: int | None = None
) -> SelectOfScalar[Event]:
    """The events matching the log's filters, for ``paginate``; with ``after``, only
    those recorded after the event of that id (a client following the log)."""
    query = _where_equal(
        select(Event), (Event.node, node), (Event.timer_id, timer_id), (Event.kind, kind)
    )
    return query if after is None else query.where(col(Event.id) > after)


RowT = TypeVar("RowT")


def _where_equal(query: SelectOfScalar[RowT], *filters: tuple[Any, Any]) -> SelectOfScalar[RowT]:
    """``query`` narrowed to ``column == value`` for each filter whose value is given."""
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    return query


# ---- losses (the loss ledger writes them on its own thread's connections) ----------------


def unacknowledged_losses(connection: Connection) -> int:
    """Events lost and not acknowledged, by the rows in the database."""
    query = select(func.coalesce(func.sum(_losses.c.count), 0)).where(
        _losses.c.acknowledged_at.is_(None)
    )
    return int(connection.execute(query).scalar_one())


def latest_losses(session: Session, limit: int) -> list[Loss]:
    return list(session.exec(select(Loss).order_by(col(Loss.id).desc()).limit(limit)))


def insert_losses(connection: Connection, rows: list[dict[str, Any]]) -> None:
    connection.execute(insert(_losses), rows)


def acknowledge_losses(connection: Connection, at: float, by: str) -> int:
    """Mark every unacknowledged loss as seen by ``by``; returns how many events."""
    covered = unacknowledged_losses(connection)
    connection.execute(
        update(_losses)
        .where(_losses.c.acknowledged_at.is_(None))
        .values(acknowledged_at=at, acknowledged_by=by)
    )
    return covered
