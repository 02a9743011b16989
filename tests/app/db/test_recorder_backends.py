"""The recorder writes the same rows on SQLite and on PostgreSQL, each through its own
batch SQL (app.db.event_rows): timers with 64-bit fleet ids, heartbeats, every kind of
end, stacks, jobs, incidents and the event log; and prune and the store's reads answer
the same on both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from app.db import store
from app.db.incident_rows import IncidentRecorder
from app.db.recorder import Recorder
from tests.conftest import migrated_engine
from tests.sample_events import changed, event, refused, timer
from timer_core import EventKind, TimerEvent
from timer_core.engine import CapturedStack, Labels, RankStack
from timer_core.engine.event_details import Kill, NoKill, Refusal

STACKS = Path(__file__).parents[2] / "timer_core" / "diagnosis" / "stacks"
SLEEPING = (STACKS / "gloo-sleep.txt").read_text()
WAITING = (STACKS / "gloo-allreduce.txt").read_text()
NODE = "node-a"
JOB = "run-7"
# Fleet ids (app.db.timer_ids) are far above 2**31, where PostgreSQL's INTEGER ends.
BASE = 2**52


def timer_event(seq: int, kind: str, n: int, state: str = "active", **changes: Any) -> TimerEvent:
    """An event of timer ``BASE + n`` (pid 1000 + n) at ``seq`` seconds and a half."""
    made = event(seq, kind, BASE + n, state)
    return changed(made, pid=1000 + n, at=seq + 0.5, node=NODE, **changes)


def ranked(seq: int, kind: str, rank: int, state: str = "active", **changes: Any) -> TimerEvent:
    return timer_event(
        seq,
        kind,
        100 + rank,
        state,
        job_id=JOB,
        rank=rank,
        local_rank=rank,
        world_size=4,
        **changes,
    )


def incident(seq: int, stuck: int) -> TimerEvent:
    def capture(rank: int) -> RankStack:
        view = timer(
            BASE + 100 + rank, pid=1100 + rank, uid=0, node=NODE, labels=Labels(JOB, rank, rank, 4)
        )
        stack = CapturedStack("py-spy", SLEEPING if rank == stuck else WAITING, 0.25)
        return RankStack(view, stack, "", rank == stuck)

    captures = tuple(capture(rank) for rank in range(4))
    return ranked(seq, EventKind.INCIDENT, stuck, captures=captures)


# Three batches, as three group commits would write them.
BATCHES: list[list[TimerEvent]] = [
    [
        timer_event(1, "acquired", 1),
        timer_event(2, "acquired", 2),
        timer_event(3, "acquired", 3),
        timer_event(4, "extended", 1, expiration_time=99.5, signal=15),
        timer_event(5, "released", 2, "released"),
        refused(6, pid=77, detail=Refusal("pid 77 is not running", "77")),
        *(ranked(7 + rank, "acquired", rank) for rank in range(4)),
    ],
    [
        # A heartbeat and an end of one timer in one batch: both sets of columns change.
        timer_event(60, "extended", 3, expiration_time=120.0),
        timer_event(
            61,
            "killed",
            3,
            "killed",
            detail=Kill(
                0.012, stack=CapturedStack("py-spy", SLEEPING, 0.3, True, ("faulthandler: off",))
            ),
        ),
        timer_event(62, "expired", 1, "expired", detail=NoKill("observe only")),
        incident(63, stuck=2),
        ranked(64, "killed", 2, "killed"),
        ranked(65, "worker_gone", 0, "expired"),
    ],
    [
        # Older than what the job table holds already: its last_seen must not go back.
        changed(ranked(130, "released", 1, "released"), at=30.0, world_size=None),
        timer_event(110, "acquired", 4, uid=4_000_000),
    ],
]


@pytest.fixture
def engine(backend_engine: Engine) -> Engine:
    return backend_engine


def record(engine: Engine) -> Recorder:
    recorder = Recorder(engine, incidents=IncidentRecorder(NODE, 60.0))
    for batch in BATCHES:
        for item in batch:
            recorder(item)
        recorder.flush()
    assert recorder.rejected == 0 and recorder.backlog() == 0
    return recorder


def table(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def contents(engine: Engine) -> dict[str, Any]:
    """Every row the recorder wrote, in a form both databases give alike (JSON parsed,
    booleans as booleans, the event log by its order, not its ids)."""
    return {
        "timers": table(
            engine,
            "SELECT id, pid, scope_id, signal, state, acquired_at, expiration_time, ended_at,"
            " end_reason, uid, node, job_id, rank, local_rank, world_size FROM timers"
            " ORDER BY id",
        ),
        "events": [
            (timer_id, kind, at, pid, source, store_json(detail))
            for timer_id, kind, at, pid, source, detail in table(
                engine, "SELECT timer_id, kind, at, pid, source, detail FROM events ORDER BY id"
            )
        ],
        "stacks": [
            (timer_id, method, seconds, bool(truncated), store_json(notes), len(text_))
            for timer_id, method, seconds, truncated, notes, text_ in table(
                engine,
                "SELECT timer_id, method, seconds, truncated, notes, text FROM stacks",
            )
        ],
        "jobs": table(
            engine, "SELECT job_id, world_size, first_seen, last_seen, incidents FROM jobs"
        ),
        "incidents": [
            (job_id, node, trigger, store_json(suspects), summary, store_json(nodes))
            for job_id, node, trigger, suspects, summary, nodes in table(
                engine,
                "SELECT job_id, node, trigger_timer_id, suspects, summary, nodes FROM incidents",
            )
        ],
        "captures": table(
            engine,
            "SELECT rank, pid, timer_id, outcome, group_number, expired_at, stack_method"
            " FROM incident_captures ORDER BY rank",
        ),
    }


def store_json(value: Any) -> Any:
    """JSON as the column gives it back: text on SQLite, parsed on PostgreSQL."""
    import json

    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    engine = migrated_engine(tmp_path_factory.mktemp("reference") / "timers.db")
    record(engine)
    return contents(engine)


def test_the_same_batches_make_the_same_rows(engine: Engine, on_sqlite: dict[str, Any]) -> None:
    record(engine)
    written = contents(engine)
    # What is expected, spelt out (so the comparison below cannot pass on two wrongs).
    timers = {row[0] - BASE: row for row in written["timers"]}
    assert sorted(timers) == [1, 2, 3, 4, 100, 101, 102, 103]
    assert timers[1][3:9] == (15, "expired", 1.0, 99.5, 62.5, "observe only")
    assert timers[2][4] == "released" and timers[3][4] == "killed"
    assert timers[3][6] == 120.0 and timers[3][8] == "signal 9 sent 12.0 ms after the deadline"
    assert timers[4][9] == 4_000_000
    assert [row[0] for row in written["events"]].count(None) == 1  # the refusal
    assert len(written["events"]) == sum(len(batch) for batch in BATCHES)
    assert written["stacks"] == [
        (BASE + 3, "py-spy", 0.3, True, ["faulthandler: off"], len(SLEEPING))
    ]
    assert written["jobs"] == [(JOB, 4, 7.5, 65.5, 1)]
    [opened] = written["incidents"]
    assert opened[:3] == (JOB, NODE, BASE + 102) and opened[3] == [2]
    assert [(row[0], row[3]) for row in written["captures"]] == [
        (0, "worker_gone"),
        (1, "captured"),
        (2, "killed"),
        (3, "captured"),
    ]
    assert written == on_sqlite


def test_prune_and_the_reads_answer_alike(engine: Engine) -> None:
    recorder = record(engine)
    with Session(engine) as session:
        assert store.killed_count(session) == 2
        assert sorted(t.id - BASE for t in store.active_timers(session, NODE)) == [4, 103]
        assert [t.id - BASE for t in store.recently_ended(session, 3)] == [100, 102, 1]
        assert store.stack_facts(session, BASE + 3) == ("py-spy", 0.3, True, ["faulthandler: off"])
        # Whole minutes, not rounded: 110.5 s is minute 1, not 2.
        assert sorted(store.event_counts_per_minute(session, 0.0, ["killed", "acquired"])) == [
            ("acquired", 0, 7),
            ("acquired", 1, 1),
            ("killed", 1, 2),
        ]
    # Events before 62 s but those of active timers (103's), then the ended timers
    # left with no events (2, 3 and 101; 1 ended later, at 62.5 s).
    assert recorder.prune(62.0) == (12, 3)
    remaining = table(engine, "SELECT timer_id, kind FROM events ORDER BY id")
    assert (BASE + 103, "acquired") in remaining and (BASE + 1, "expired") in remaining
    assert (BASE + 1, "acquired") not in remaining and len(remaining) == 6
    assert [row[0] - BASE for row in table(engine, "SELECT id FROM timers ORDER BY id")] == [
        1, 4, 100, 102, 103,
    ]  # fmt: skip
