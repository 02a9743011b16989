"""Events of a hung job and a lone kill, written by a real recorder with its incident
and outbox writers, for the notification tests."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from sqlalchemy import Engine, text

from app.db.incident_rows import IncidentRecorder
from app.db.recorder import Recorder
from app.notify.channels import ChannelCreate
from app.notify.notify_store import add_channel
from app.notify.outbox import Outbox
from tests.sample_events import changed, event, timer, timer_of
from timer_core import EventKind, TimerEvent, TimerState
from timer_core.engine import CapturedStack, Labels, RankStack
from timer_core.engine.event_details import Kill

__all__ = [
    "add_webhook",
    "body_of",
    "hung_job",
    "job_event",
    "killed",
    "lone_kill",
    "recorder_for",
    "rows",
]

WINDOW = 60.0


def recorder_for(engine: Engine, node: str = "node-a") -> tuple[Recorder, Outbox]:
    outbox = Outbox(node, WINDOW)
    recorder = Recorder(engine, incidents=IncidentRecorder(node, WINDOW), also=[outbox.record])
    return recorder, outbox


def job_event(seq: int, kind: str, rank: int, job: str, at: float, **more: Any) -> TimerEvent:
    return changed(
        event(seq, kind, 1000 * seq + rank),
        pid=500 + rank,
        uid=1234,
        node="node-a",
        job_id=job,
        rank=rank,
        world_size=4,
        at=at,
        scope_id="train-step",
        **more,
    )


def hung_job(recorder: Recorder, job: str = "job-1", first_seq: int = 1, ranks: int = 4) -> None:
    """A job of ``ranks`` ranks hangs: its ranks are acquired, the capture opens the
    incident, then all are killed (each kill its own batch)."""
    now = time.time()
    seq = first_seq
    timers = []
    for rank in range(ranks):
        made = job_event(seq, EventKind.ACQUIRED, rank, job, now)
        timers.append(made)
        recorder(made)
        seq += 1
    recorder.flush()
    captures = tuple(
        RankStack(
            timer(
                timer_of(made).id,
                pid=500 + rank,
                uid=1234,
                node="node-a",
                labels=Labels(job, rank, rank, 4),
            ),
            CapturedStack("py-spy", "Thread 1 (idle)\n    sleep (train.py:10)\n", 0.1),
            "",
            True,
        )
        for rank, made in enumerate(timers)
    )
    recorder(changed(timers[0], seq=seq, kind=EventKind.INCIDENT, at=now + 1, captures=captures))
    recorder.flush()
    for made in timers:
        seq += 1
        recorder(killed(made, seq, now + 1.1))
        recorder.flush()


def killed(armed: TimerEvent, seq: int, at: float) -> TimerEvent:
    """``armed``'s timer killed."""
    return dataclasses.replace(
        armed,
        seq=seq,
        kind=EventKind.KILLED,
        at=at,
        detail=Kill(0.01),
        timer=dataclasses.replace(timer_of(armed), state=TimerState.KILLED),
    )


def lone_kill(
    recorder: Recorder, seq: int, timer_id: int, scope: str = "step", uid: int = 1234
) -> None:
    """A worker of ``uid`` with no job is armed and killed."""
    now = time.time()
    armed = changed(event(seq, EventKind.ACQUIRED, timer_id), at=now, scope_id=scope, uid=uid)
    recorder(armed)
    recorder(killed(armed, seq + 1, now + 0.5))
    recorder.flush()


def add_webhook(engine: Engine, url: str, secret: str = "s" * 32, **fields: Any) -> int:
    given = ChannelCreate.model_validate(
        {"name": "hook", "url": url, "events": ["kill", "incident"], **fields}
    )
    row = add_channel(engine, given, secret, "test")
    assert row.id is not None
    return row.id


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(text(sql), params).mappings()]


def body_of(row: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(row["body"])
    return parsed
