"""Two nodes open "the" incident of one job at the same instant (contract 9): node-a and
node-b, each with its own recorder and engine on one real PostgreSQL database, write
their ``incident`` event of the same job from two threads released together by a
barrier, round after round. Each round must make exactly one incident, holding the
four ranks of both nodes, analysed over all four: the database serializes them (the
job's row is locked), not timing.

Two things lock that row today: the recorder's jobs upsert (``ON CONFLICT DO UPDATE``)
and the incident writer's ``SELECT ... FOR UPDATE``. Either alone passes this test;
with neither (the upsert made ``DO NOTHING`` and the lock a no-op), about a third of
the rounds made two incidents.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from app.db.database import make_engine
from app.db.incident_rows import IncidentRecorder
from app.db.job_models import Incident, IncidentCapture, Job
from app.db.recorder import Recorder
from tests.conftest import migrated_engine
from tests.sample_events import changed, event, timer
from timer_core import EventKind, TimerEvent
from timer_core.engine import CapturedStack, Labels, RankStack

STACKS = Path(__file__).parents[2] / "timer_core" / "diagnosis" / "stacks"
SLEEPING = (STACKS / "gloo-sleep.txt").read_text()
WAITING = (STACKS / "gloo-allreduce.txt").read_text()
WINDOW = 60.0
NODE_OF_RANK = {0: "node-a", 1: "node-a", 2: "node-b", 3: "node-b"}
NODES = ("node-a", "node-b")
STUCK = 3  # on node-b
ROUNDS = 30


def timer_id(round_number: int, rank: int) -> int:
    return round_number * 10 + rank + 1


def labelled(seq: int, kind: str, round_number: int, rank: int, **changes: Any) -> TimerEvent:
    """An event of ``rank``'s timer in round ``round_number`` (job ``race-<round>``)."""
    return changed(
        event(seq, kind, timer_id(round_number, rank)),
        pid=500 + rank,
        node=NODE_OF_RANK[rank],
        job_id=f"race-{round_number}",
        rank=rank,
        local_rank=rank % 2,
        world_size=4,
        **changes,
    )


def incident_event(seq: int, round_number: int, node: str) -> TimerEvent:
    """``node``'s incident event: the stacks of its own two ranks, both expiring."""
    ranks = [rank for rank, name in NODE_OF_RANK.items() if name == node]
    captures = tuple(
        RankStack(
            timer(
                timer_id(round_number, rank),
                pid=500 + rank,
                uid=0,
                node=node,
                labels=Labels(f"race-{round_number}", rank, rank % 2, 4),
            ),
            CapturedStack("py-spy", SLEEPING if rank == STUCK else WAITING, 0.2),
            "",
            True,
        )
        for rank in ranks
    )
    # Both nodes' expiries fall at the same instant.
    return labelled(
        seq,
        EventKind.INCIDENT,
        round_number,
        ranks[-1],
        at=1000.0 + round_number,
        captures=captures,
    )


@pytest.fixture
def engines(postgres_url: str) -> Iterator[dict[str, Engine]]:
    """Each node's own engine (its own connection pool) on the one database."""
    migrated_engine(postgres_url).dispose()
    made = {node: make_engine(postgres_url) for node in NODES}
    yield made
    for engine in made.values():
        engine.dispose()


def run_node(
    node: str, engine: Engine, barrier: threading.Barrier, errors: list[BaseException]
) -> None:
    """Record this node's events of every round, the incident events in step with the
    other node. In odd rounds the job's first events come in the racing batch itself,
    so the job's row is made by the two racing transactions."""
    recorder = Recorder(engine, incidents=IncidentRecorder(node, WINDOW))
    seq = itertools.count(1)
    try:
        for round_number in range(ROUNDS):
            acquisitions = [
                labelled(next(seq), EventKind.ACQUIRED, round_number, rank)
                for rank, name in NODE_OF_RANK.items()
                if name == node
            ]
            if round_number % 2 == 0:
                for item in acquisitions:
                    recorder(item)
                recorder.flush()
                acquisitions = []
            barrier.wait(60)
            for item in [*acquisitions, incident_event(next(seq), round_number, node)]:
                recorder(item)
            recorder.flush()
            # The batch was written, not left buffered after a failed write.
            assert recorder.backlog() == 0, recorder.last_error
            assert recorder.last_error is None, recorder.last_error
    except BaseException as error:
        errors.append(error)
        barrier.abort()


def test_two_nodes_opening_one_jobs_incident_at_once_make_one(
    engines: dict[str, Engine],
) -> None:
    barrier = threading.Barrier(len(NODES))
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=run_node, args=(node, engines[node], barrier, errors))
        for node in NODES
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors

    engine = engines["node-a"]
    with engine.connect() as connection:
        incidents = connection.execute(select(Incident.__table__)).all()  # type: ignore[attr-defined]
        captures = connection.execute(select(IncidentCapture.__table__)).all()  # type: ignore[attr-defined]
        jobs = connection.execute(select(Job.__table__)).all()  # type: ignore[attr-defined]
    by_job: dict[str, list[Any]] = {}
    for row in incidents:
        by_job.setdefault(row.job_id, []).append(row)
    doubled = sorted(job for job, rows in by_job.items() if len(rows) != 1)
    assert not doubled, f"{len(doubled)} of {ROUNDS} jobs have more than one incident: {doubled}"
    assert sorted(by_job) == sorted(f"race-{n}" for n in range(ROUNDS))
    assert {job.job_id: job.incidents for job in jobs} == {job: 1 for job in by_job}

    ranks_of: dict[int, set[tuple[int | None, str]]] = {}
    for capture in captures:
        ranks_of.setdefault(capture.incident_id, set()).add((capture.rank, capture.node))
    every_rank = {(rank, node) for rank, node in NODE_OF_RANK.items()}
    for [incident] in by_job.values():
        # Both halves are in it, and the analysis stored is the one over all four.
        assert ranks_of[incident.id] == every_rank, (incident.job_id, ranks_of[incident.id])
        assert incident.nodes == list(NODES), incident
        assert incident.suspects == [STUCK], incident
        assert incident.summary.startswith(f"rank {STUCK} stuck in "), incident.summary
        assert "ranks 0-2 wait in" in incident.summary, incident.summary
