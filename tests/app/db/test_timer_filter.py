"""``GET /timers``' filters mean the same in the database and in the engine: the page a
worker gets while the database is away lists what the database would have listed."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from pathlib import Path
from typing import Any

from sqlmodel import Session

from app.db.models import Timer, TimerPublic, timer_values
from app.db.store import TimerFilter
from app.web.routers.timers import list_timers
from tests.conftest import migrated_engine
from tests.sample_events import timer
from timer_core.engine import Labels, TimerState

# Timers that differ from one another in every filtered field, in pairs that share it.
SNAPSHOTS = [
    timer(
        timer_id,
        state,
        pid=pid,
        scope_id=scope,
        node=node,
        labels=Labels(job_id=job, rank=rank, world_size=4, restart_count=restarts),
    )
    for timer_id, (state, pid, scope, node, job, rank, restarts) in enumerate(
        [
            ("active", 100, "a", "n1", "job-1", 0, 0),
            ("active", 101, "b", "n1", "job-1", 1, 1),
            ("killed", 100, "b", "n2", "job-2", 0, 1),
            ("released", 102, "a", "n2", None, None, None),
        ],
        start=1,
    )
]

# Every filter alone, with a value some timers have and one none has, plus pairs.
ONE_FIELD: list[dict[str, Any]] = [
    {"state": TimerState.ACTIVE},
    {"state": TimerState.EXPIRED},
    {"pid": 100},
    {"scope": "b"},
    {"node": "n2"},
    {"job": "job-1"},
    {"rank": 0},
    {"rank": 3},
    {"restart_count": 1},
    {"restart_count": 0},
]
FILTERS = [TimerFilter(**given) for given in ONE_FIELD] + [
    TimerFilter(**(a | b)) for a, b in itertools.combinations(ONE_FIELD, 2)
]


def test_the_database_and_the_engine_pick_the_same_timers(tmp_path: Path) -> None:
    engine = migrated_engine(tmp_path / "t.db")
    with Session(engine) as session:
        for snapshot in SNAPSHOTS:
            session.add(Timer.model_validate(timer_values(snapshot)))
        session.commit()
        for filters in FILTERS:
            in_database = {row.id for row in session.exec(filters.query())}
            in_engine = {snapshot.id for snapshot in SNAPSHOTS if filters.matches(snapshot)}
            assert in_database == in_engine, filters
    # The filters do select: some match a few timers, some none, and none match all.
    sizes = {len([s for s in SNAPSHOTS if f.matches(s)]) for f in FILTERS}
    assert 0 in sizes and 1 in sizes and len(SNAPSHOTS) not in sizes


def test_every_filter_of_the_route_is_a_field_of_the_filter() -> None:
    # A query parameter of GET /timers that TimerFilter lacks would be taken and ignored.

    route_filters = set(inspect.signature(list_timers).parameters) - {
        "service",
        "_known",
        "_slot",
        "limit",
        "cursor",
    }
    assert route_filters == {field.name for field in dataclasses.fields(TimerFilter)}
    assert {field.name for field in dataclasses.fields(TimerFilter)} <= set(
        TimerPublic.model_fields
    ) | {"scope", "job"}
