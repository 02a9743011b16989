"""The recorder on a real SQLite file: group commit, and no poison batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlmodel import Session, select

from app.db import make_engine, migrate
from app.models import Event, Timer
from app.recorder import Recorder
from timer_core import TimerEvent


def event(seq: int, kind: str, timer_id: int, state: str = "active") -> TimerEvent:
    return TimerEvent(
        seq=seq,
        kind=kind,
        timer_id=timer_id,
        pid=100,
        scope_id="s",
        at=float(seq),
        state=state,
        signal=9,
        source="test",
        acquired_at=1.0,
        expiration_time=5.0,
        process_create_time=1.0,
    )


def test_batch_writes_timers_and_events_and_reports_the_commit(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(engine)
    recorder = Recorder(engine)
    for item in (event(1, "acquired", 1), event(2, "extended", 1), event(3, "killed", 1, "killed")):
        recorder(item)
    recorder.flush()
    assert recorder.committed_seq == 3 and recorder.backlog() == 0
    with Session(engine) as session:
        timer = session.exec(select(Timer)).one()
        assert (timer.state, timer.ended_at, timer.end_reason) == ("killed", 3.0, "killed")
        assert [e.kind for e in session.exec(select(Event))] == ["acquired", "extended", "killed"]

    async def committed() -> bool:
        return await recorder.wait_committed(3, timeout=0.1)

    assert asyncio.run(committed())


def test_an_event_that_can_never_be_written_does_not_block_the_others(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(engine)
    recorder = Recorder(engine)
    recorder(event(1, "acquired", 7))
    recorder.flush()
    recorder(event(2, "acquired", 7))  # duplicate id: violates the primary key
    recorder(event(3, "acquired", 8))
    recorder.flush()
    assert recorder.rejected == 1 and recorder.backlog() == 0 and recorder.committed_seq == 3
    with Session(engine) as session:
        assert sorted(t.id for t in session.exec(select(Timer))) == [7, 8]


def test_a_full_buffer_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(engine)
    recorder = Recorder(engine, buffer_size=2)
    for seq in (1, 2, 3):
        recorder(event(seq, "acquired", seq))
    assert recorder.dropped == 1 and recorder.backlog() == 2


def test_a_value_sqlite_cannot_hold_is_rejected_and_the_thread_lives_on(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(engine)
    recorder = Recorder(engine)
    recorder.start()
    try:
        too_big = TimerEvent(
            seq=1,
            kind="refused",
            timer_id=None,
            pid=10**30,
            scope_id="s",
            at=1.0,
            state="refused",
            signal=9,
            source="test",
            acquired_at=1.0,
            expiration_time=1.0,
        )
        recorder(too_big)
        recorder(event(2, "acquired", 5))

        async def committed() -> bool:
            return await recorder.wait_committed(2, timeout=10)

        assert asyncio.run(committed())
        assert recorder.rejected == 1
    finally:
        recorder.stop()
    with Session(engine) as session:
        assert [e.kind for e in session.exec(select(Event))] == ["acquired"]
