"""How an incident stores the ranks' flight recorders (contract 10), on SQLite and
PostgreSQL: each rank whose stack came from its worker server keeps its recorder,
normalized (``RankRecorder.stored_json``), and the incident the collective findings
and the rule that named each suspect, from real dumps of a hung torchrun job (rank 1
skipped the 4th all_reduce). A dump that is garbage is stored as what could be read."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select

from app.db.incident_rows import IncidentRecorder
from app.db.job_models import Incident, IncidentCapture
from app.db.recorder import Recorder
from tests.app.job_seeds import NODE, RECORDERS, JobSeed
from tests.sample_events import changed, timer
from timer_core import EventKind, TimerEvent
from timer_core.diagnosis import load_flight_recorder
from timer_core.engine import CapturedStack, Labels, RankStack

HUNG = JobSeed("run-fr", first_id=1, world_size=3, stuck=1, recorders="skip")


@pytest.fixture
def engine(backend_engine: Engine) -> Engine:
    return backend_engine


def record(engine: Engine, events: list[TimerEvent]) -> None:
    recorder = Recorder(engine, incidents=IncidentRecorder(NODE, 60.0))
    for seq, item in enumerate(events, start=1):
        recorder(changed(item, seq=seq))
    recorder.flush()


def rows(engine: Engine) -> tuple[Any, list[Any]]:
    with engine.connect() as connection:
        (incident,) = connection.execute(select(Incident.__table__)).all()  # type: ignore[attr-defined]
        captures = connection.execute(select(IncidentCapture.__table__)).all()  # type: ignore[attr-defined]
    return incident, sorted(captures, key=lambda row: row.rank)


def test_each_ranks_recorder_is_stored_and_the_incident_names_the_skipped_collective(
    engine: Engine,
) -> None:
    record(engine, HUNG.events())
    incident, captures = rows(engine)
    for row in captures:
        dump = (RECORDERS / "skip" / f"rank{row.rank}.json").read_bytes()
        assert row.stack_method == "worker-server"
        assert row.collectives == load_flight_recorder(row.rank, dump).stored_json()
    (finding,) = incident.collective_findings
    assert (finding["pg"], finding["seq"], finding["op"]) == ("0", 4, "all_reduce")
    assert (finding["ranks"], finding["missing"]) == ([0, 2], [1])
    assert incident.suspects == [1]
    assert incident.suspect_rules == {"1": "collective"}


def test_a_later_end_without_a_stack_keeps_the_ranks_recorder(engine: Engine) -> None:
    """The stuck rank's kill event (no stack of its own) joins the incident after the
    capture: its row keeps the recorder the capture stored."""
    record(engine, HUNG.events())
    _, captures = rows(engine)
    assert captures[1].outcome == "killed"
    assert captures[1].collectives is not None


def server_stack(dump: bytes) -> CapturedStack:
    text = 'Thread 0x1 (most recent call first):\n  File "w.py", line 3 in step\n'
    return CapturedStack("worker-server", text, 0.01, flight_recorder=dump)


def capture_of(rank: int | None, stack: CapturedStack) -> RankStack:
    labels = Labels("run-x", rank, rank, 2)
    view = timer(40 + (rank or 0), pid=900 + (rank or 0), uid=1000, node=NODE, labels=labels)
    return RankStack(view, stack, "", True)


def incident_of(*captures: RankStack) -> TimerEvent:
    trigger = HUNG.labelled(EventKind.INCIDENT, 0, "active", HUNG.at + 10)
    return changed(trigger, job_id="run-x", captures=captures)


@pytest.mark.parametrize(
    ("dump", "dropped"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "dump is a list"),
        (b'{"entries": [{"process_group": ["0\\u0000", "x"], "collective_seq_id": 1}]}', None),
    ],
    ids=["not json", "not an object", "a NUL in a name"],
)
def test_a_garbage_recorder_is_stored_as_what_could_be_read(
    engine: Engine, dump: bytes, dropped: str | None
) -> None:
    record(engine, [incident_of(capture_of(0, server_stack(dump)))])
    incident, (row,) = rows(engine)
    assert row.collectives is not None
    if dropped is None:  # PostgreSQL's jsonb would refuse the NUL: it is replaced
        assert [group["pg"] for group in row.collectives["groups"]] == ["0\ufffd"]
    else:
        assert [note for note in row.collectives["dropped"] if dropped in note] != []
    # One rank's recorder names nobody: the stack rule named the suspect.
    assert incident.collective_findings == []
    assert incident.suspect_rules == {"0": "stack"}


def test_a_rank_of_unknown_number_keeps_no_recorder(engine: Engine) -> None:
    """The analysis compares recorders by rank: one of no known rank is not stored."""
    dump = (RECORDERS / "skip" / "rank0.json").read_bytes()
    record(engine, [incident_of(capture_of(None, server_stack(dump)))])
    _, (row,) = rows(engine)
    assert row.stack_method == "worker-server"
    assert row.collectives is None
