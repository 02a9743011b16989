"""The recorder on a real SQLite file and on a real PostgreSQL server: group commit,
and no poison batch."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.db.models import Event, Timer
from app.db.recorder import Recorder
from tests.sample_events import changed, event, refused


@pytest.fixture
def engine(backend_engine: Engine) -> Engine:
    return backend_engine


@pytest.fixture
def recorder(engine: Engine) -> Recorder:
    return Recorder(engine)


def test_batch_writes_timers_and_events_and_reports_the_commit(
    engine: Engine, recorder: Recorder
) -> None:
    for item in (event(1, "acquired", 1), event(2, "extended", 1), event(3, "killed", 1, "killed")):
        recorder(item)
    recorder.flush()
    assert recorder.committed_seq == 3 and recorder.backlog() == 0
    with Session(engine) as session:
        timer = session.exec(select(Timer)).one()
        assert (timer.state, timer.ended_at, timer.end_reason) == (
            "killed",
            3.0,
            "signal 9 sent 0.0 ms after the deadline",
        )
        assert [e.kind for e in session.exec(select(Event))] == ["acquired", "extended", "killed"]

    async def committed() -> bool:
        return await recorder.wait_committed(3, timeout=0.1)

    assert asyncio.run(committed())


def test_an_event_that_can_never_be_written_does_not_block_the_others(
    engine: Engine, recorder: Recorder
) -> None:
    recorder(event(1, "acquired", 7))
    recorder.flush()
    recorder(event(2, "acquired", 7))  # duplicate id: violates the primary key
    recorder(event(3, "acquired", 8))
    recorder.flush()
    assert recorder.rejected == 1 and recorder.backlog() == 0 and recorder.committed_seq == 3
    with Session(engine) as session:
        assert sorted(t.id for t in session.exec(select(Timer))) == [7, 8]


def test_a_full_buffer_keeps_every_timer_event_and_drops_only_refusals(engine: Engine) -> None:
    recorder = Recorder(engine, buffer_size=2)
    for seq in (1, 2, 3):
        recorder(event(seq, "acquired", seq))
    recorder(refused(4))  # changes no timer: dropped beyond the bound, and counted
    recorder(event(5, "released", 1, "released"))
    assert recorder.dropped == 1 and recorder.backlog() == 4
    recorder.flush()
    # The dropped refusal is set aside for good, so it does not hold the watermark back.
    assert recorder.committed_seq == 5
    with Session(engine) as session:
        assert sorted(t.id for t in session.exec(select(Timer))) == [1, 2, 3]


def waiter_released(recorder: Recorder, seq: int) -> bool:
    async def wait() -> bool:
        return await recorder.wait_committed(seq, timeout=0.05)

    return asyncio.run(wait())


def test_a_waiter_is_not_released_before_its_own_event_is_written(recorder: Recorder) -> None:
    """The 201-after-commit guarantee under reordering: event 2 reaches the recorder,
    and is written, before event 1. Whoever waits on 1 (or on 2) must wait for 1."""
    recorder(event(2, "acquired", 2))
    recorder.flush()
    assert recorder.backlog() == 0  # 2 is on disk...
    assert recorder.committed_seq == 0  # ...but 1 is not, so nothing up to 2 is
    assert not waiter_released(recorder, 1)
    assert not waiter_released(recorder, 2)
    recorder(event(1, "acquired", 1))
    recorder.flush()
    assert recorder.committed_seq == 2
    assert waiter_released(recorder, 1) and waiter_released(recorder, 2)


def test_a_bad_event_is_isolated_in_a_few_transactions_not_one_per_event(
    engine: Engine, recorder: Recorder
) -> None:
    recorder(event(1, "acquired", 1))
    recorder.flush()
    commits = recorder.commits
    recorder(event(2, "acquired", 1))  # duplicate id: can never be written
    for seq in range(3, 1003):
        recorder(event(seq, "acquired", seq))
    recorder.flush()
    assert recorder.rejected == 1 and recorder.committed_seq == 1002
    # Halving isolates it in about log2(1000) commits; one by one would take 1000.
    assert recorder.commits - commits <= 20
    with Session(engine) as session:
        assert len(session.exec(select(Timer)).all()) == 1001


def test_later_events_of_a_timer_that_could_not_be_recorded_are_kept_unlinked(
    engine: Engine, recorder: Recorder
) -> None:
    """An acquisition the database cannot hold must not make each later event of its
    timer fail the foreign key (and drag its batch to row-by-row writes)."""
    unstorable = changed(event(1, "acquired", 9), uid=10**30)
    recorder(unstorable)
    recorder.flush()
    commits = recorder.commits
    recorder(event(2, "extended", 9))
    recorder(event(3, "acquired", 10))
    recorder(event(4, "killed", 9, "killed"))
    recorder.flush()
    assert recorder.commits - commits == 1  # one batch, no split
    assert recorder.committed_seq == 4 and recorder.backlog() == 0
    assert recorder.rejected == 1  # the timer is not in the database, and it says so
    with Session(engine) as session:
        assert [t.id for t in session.exec(select(Timer))] == [10]
        events = session.exec(select(Event).order_by(col(Event.id))).all()
    assert [(e.kind, e.timer_id) for e in events] == [
        ("acquired", None),
        ("extended", None),
        ("acquired", 10),
        ("killed", None),
    ]
    assert events[3].detail["timer_id"] == 9 and "could not be recorded" in str(events[3].detail)


def test_a_value_the_database_cannot_hold_is_rejected_and_the_thread_lives_on(
    engine: Engine, recorder: Recorder
) -> None:
    recorder.start()
    try:
        recorder(refused(1, pid=10**30))  # too big
        recorder(event(2, "acquired", 5))

        async def committed() -> bool:
            return await recorder.wait_committed(2, timeout=10)

        assert asyncio.run(committed())
        assert recorder.rejected == 1
    finally:
        recorder.stop()
    with Session(engine) as session:
        assert [e.kind for e in session.exec(select(Event))] == ["acquired"]


def test_a_refused_pid_beyond_32_bits_and_a_32_bit_unsigned_uid_are_recorded(
    engine: Engine, recorder: Recorder
) -> None:
    """A request may claim any pid (refused, and recorded with it); a uid is unsigned
    32-bit: both beyond PostgreSQL's INTEGER, neither a loss."""
    recorder(refused(1, pid=2**40))
    recorder(changed(event(2, "acquired", 3), uid=2**32 - 2))
    recorder.flush()
    assert recorder.rejected == 0 and recorder.committed_seq == 2
    with Session(engine) as session:
        assert [e.pid for e in session.exec(select(Event).order_by(col(Event.id)))] == [2**40, 100]
        assert session.exec(select(Timer)).one().uid == 2**32 - 2


def test_a_scope_id_with_a_nul_is_recorded(engine: Engine, recorder: Recorder) -> None:
    """SQLite keeps it verbatim; PostgreSQL's text cannot hold NUL, so there it is kept
    with U+FFFD in its place: the timer is recorded either way, and nothing is lost."""
    recorder(changed(event(1, "acquired", 4), scope_id="a\x00b"))
    recorder.flush()
    assert recorder.rejected == 0 and recorder.committed_seq == 1
    kept = "a\x00b" if engine.dialect.name == "sqlite" else "a\ufffdb"
    with Session(engine) as session:
        assert session.exec(select(Timer)).one().scope_id == kept
        assert session.exec(select(Event)).one().scope_id == kept
