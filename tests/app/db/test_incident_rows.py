"""How the recorder writes incidents: an ``incident`` event opens one (or joins the
job's incident within the window), later expiries of the job join it with their
outcomes and stacks, and the analysis over recorded real stacks is kept current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from app.db.incident_rows import IncidentRecorder
from app.db.job_models import Incident, IncidentCapture, Job
from app.db.models import Timer
from app.db.recorder import Recorder
from tests.sample_events import changed, event, timer
from timer_core import EventKind, TimerEvent
from timer_core.engine import CapturedStack, Labels, RankStack

STACKS = Path(__file__).parents[2] / "timer_core" / "diagnosis" / "stacks"
SLEEPING = (STACKS / "gloo-sleep.txt").read_text()
WAITING = (STACKS / "gloo-allreduce.txt").read_text()
JOB = "run-9"
WINDOW = 60.0
NODE = "node-a"


def labelled(seq: int, kind: str, rank: int, state: str = "active", **changes: Any) -> TimerEvent:
    """An event of the timer of ``rank`` (timer id rank + 1, pid 500 + rank)."""
    return changed(
        event(seq, kind, rank + 1, state),
        pid=500 + rank,
        node=NODE,
        job_id=JOB,
        rank=rank,
        local_rank=rank,
        world_size=4,
        **changes,
    )


def rank_stack(rank: int, text: str | None, expiring: bool) -> RankStack:
    view = timer(rank + 1, pid=500 + rank, uid=1000, node=NODE, labels=Labels(JOB, rank, rank, 4))
    stack = CapturedStack("py-spy", text, 0.2) if text is not None else None
    return RankStack(view, stack, "" if text else "the capture failed: gone", expiring)


def incident_event(seq: int, stuck: int, at: float) -> TimerEvent:
    captures = tuple(
        rank_stack(rank, SLEEPING if rank == stuck else WAITING, rank == stuck) for rank in range(4)
    )
    return labelled(seq, EventKind.INCIDENT, stuck, at=at, captures=captures)


@pytest.fixture
def engine(backend_engine: Engine) -> Engine:
    return backend_engine


def record(engine: Engine, events: list[TimerEvent]) -> None:
    recorder = Recorder(engine, incidents=IncidentRecorder(NODE, WINDOW))
    for item in events:
        recorder(item)
    recorder.flush()


def incidents(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(Incident.__table__)).all())  # type: ignore[attr-defined]


def captures(engine: Engine) -> dict[int, Any]:
    with engine.connect() as connection:
        rows = connection.execute(select(IncidentCapture.__table__)).all()  # type: ignore[attr-defined]
    assert None not in {row.rank for row in rows}
    return {row.rank: row for row in rows}


def acquisitions() -> list[TimerEvent]:
    return [labelled(rank + 1, EventKind.ACQUIRED, rank, at=float(rank + 1)) for rank in range(4)]


def test_an_incident_event_opens_an_incident_with_every_rank_and_names_the_suspect(
    engine: Engine,
) -> None:
    record(engine, [*acquisitions(), incident_event(5, stuck=2, at=10.0)])
    [incident] = incidents(engine)
    assert (incident.job_id, incident.node, incident.trigger_timer_id) == (JOB, NODE, 3)
    assert incident.suspects == [2]
    assert incident.summary.startswith("rank 2 stuck in step (train.py:6)"), incident.summary
    assert "ranks 0-1, 3 wait in" in incident.summary
    assert incident.nodes == [NODE]
    rows = captures(engine)
    assert sorted(rows) == [0, 1, 2, 3]
    assert {rank: row.outcome for rank, row in rows.items()} == {
        0: "captured",
        1: "captured",
        2: "expired",
        3: "captured",
    }
    assert rows[2].stack_text == SLEEPING and rows[0].stack_text == WAITING
    assert rows[2].group_number != rows[0].group_number == rows[1].group_number
    with engine.connect() as connection:
        [job] = connection.execute(select(Job.__table__)).all()  # type: ignore[attr-defined]
    assert (job.job_id, job.world_size, job.incidents) == (JOB, 4, 1)


def test_later_expiries_within_the_window_join_and_an_exit_updates_its_rank(
    engine: Engine,
) -> None:
    record(
        engine,
        [
            *acquisitions(),
            incident_event(5, stuck=2, at=10.0),
            labelled(6, EventKind.KILLED, 2, "killed", at=10.1),
            labelled(7, EventKind.KILLED, 0, "killed", at=40.0),
            labelled(8, EventKind.WORKER_GONE, 1, "released", at=41.0),
        ],
    )
    [incident] = incidents(engine)
    rows = captures(engine)
    assert {rank: row.outcome for rank, row in rows.items()} == {
        0: "killed",
        1: "worker_gone",
        2: "killed",
        3: "captured",
    }
    # Joining kept the stacks taken when the incident opened.
    assert rows[0].stack_text == WAITING
    assert incident.suspects == [2]


def record_late_joiner(engine: Engine, waiting: str, method: str) -> None:
    """An incident capturing ranks 2 (stuck) and 0 (``waiting``), then rank 3 killed
    later with a stack of its own (``waiting``, taken by ``method``)."""
    only_two = changed(
        incident_event(5, stuck=2, at=10.0),
        captures=(rank_stack(2, SLEEPING, True), rank_stack(0, waiting, False)),
    )
    late = labelled(
        6, EventKind.KILLED, 3, "killed", at=20.0, stack=CapturedStack(method, waiting, 0.1)
    )
    record(engine, [*acquisitions(), only_two, late])


def test_a_rank_not_captured_joins_with_its_own_stack_and_the_analysis_is_redone(
    engine: Engine,
) -> None:
    record_late_joiner(engine, WAITING, "py-spy")
    [incident] = incidents(engine)
    rows = captures(engine)
    assert sorted(rows) == [0, 2, 3]
    assert rows[3].outcome == "killed" and rows[3].stack_text == WAITING
    assert "ranks 0, 3 wait in" in incident.summary


def test_after_the_window_an_expiry_opens_a_new_incident(engine: Engine) -> None:
    record(
        engine,
        [
            *acquisitions(),
            incident_event(5, stuck=2, at=10.0),
            # Beyond the window, with no incident event: joins nothing.
            labelled(6, EventKind.KILLED, 0, "killed", at=10.0 + WINDOW + 1),
            incident_event(7, stuck=1, at=10.0 + WINDOW + 2),
        ],
    )
    first, second = sorted(incidents(engine), key=lambda row: row.opened_at)
    assert first.suspects == [2] and second.suspects == [1]
    with engine.connect() as connection:
        [job] = connection.execute(select(Job.__table__)).all()  # type: ignore[attr-defined]
    assert job.incidents == 2


def test_events_of_unlabelled_timers_open_nothing(engine: Engine) -> None:
    unlabelled = changed(incident_event(5, stuck=2, at=10.0), job_id=None)
    record(engine, [event(1, EventKind.ACQUIRED, 1), unlabelled])
    assert incidents(engine) == []


def test_incidents_past_retention_are_pruned_with_their_captures(engine: Engine) -> None:
    record(
        engine,
        [
            *acquisitions(),
            incident_event(5, stuck=2, at=10.0),
            incident_event(6, stuck=1, at=10.0 + WINDOW + 100),
        ],
    )
    Recorder(engine).prune(cutoff=10.0 + WINDOW)
    [kept] = incidents(engine)
    assert kept.suspects == [1]
    with engine.connect() as connection:
        left = connection.execute(
            select(IncidentCapture.__table__.c.incident_id)  # type: ignore[attr-defined]
        ).scalars()
        assert set(left) == {kept.id}


def test_another_users_processes_with_the_same_job_id_do_not_join(engine: Engine) -> None:
    victim = changed(incident_event(5, stuck=2, at=10.0), uid=1000)
    decoy = changed(
        incident_event(6, stuck=1, at=11.0),
        uid=2000,
        pid=999,
        captures=(rank_stack(1, SLEEPING, True),),
    )
    record(engine, [*acquisitions(), victim, decoy])
    first, second = sorted(incidents(engine), key=lambda row: row.opened_at)
    assert (first.uid, first.suspects) == (1000, [2])
    assert second.uid == 2000
    with engine.connect() as connection:
        victims = connection.execute(
            select(IncidentCapture.__table__.c.pid).where(  # type: ignore[attr-defined]
                IncidentCapture.__table__.c.incident_id == first.id  # type: ignore[attr-defined]
            )
        ).scalars()
        assert sorted(victims) == [500, 501, 502, 503]


def test_a_nul_in_a_workers_stack_loses_nothing_on_either_database(engine: Engine) -> None:
    """A worker writes its own faulthandler dump, and names its own functions: a NUL in
    them (which PostgreSQL's text refuses) must not cost the kill's event or the rank."""
    hostile = WAITING + "  evil\x00name (x.py:1)\n"
    record_late_joiner(engine, hostile, "faulthandler")
    rows = captures(engine)
    assert sorted(rows) == [0, 2, 3]
    assert rows[0].stack_text == hostile.replace("\x00", "\ufffd") == rows[3].stack_text
    timers = Timer.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        state = connection.execute(select(timers.c.state).where(timers.c.id == 4)).scalar()
    assert state == "killed"
