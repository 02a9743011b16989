"""Retention: old events and ended timers are pruned in the background; active
timers and their events never are."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

from sqlmodel import Session, select

from app.db.models import Event, Stack, Timer
from app.db.recorder import Recorder
from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process, migrated_engine
from tests.sample_events import event
from tests.waiting import wait_until


def test_prune_keeps_active_timers_and_recent_events(tmp_path: Path) -> None:
    engine = migrated_engine(tmp_path / "r.db")
    recorder = Recorder(engine)
    # Timer 1: ended long ago. Timer 2: still active, acquired long ago. Timer 3: recent.
    for item in (
        event(1, "acquired", 1),
        event(2, "released", 1, "released"),
        event(3, "acquired", 2),
        event(1000, "acquired", 3),
        event(1001, "killed", 3, "killed"),
    ):
        recorder(item)
    recorder.flush()
    with Session(engine) as session:
        for timer_id in (1, 2):
            session.add(
                Stack(
                    timer_id=timer_id,
                    method="proc",
                    captured_at=2.0,
                    seconds=0.1,
                    truncated=False,
                    notes=[],
                    text=f"stack of {timer_id}",
                )
            )
        session.commit()
    events, timers = recorder.prune(cutoff=500.0)  # test events are "at" their seq
    assert (events, timers) == (2, 1)
    with Session(engine) as session:
        assert sorted(t.id for t in session.exec(select(Timer))) == [2, 3]
        # A stack goes with its timer (ON DELETE CASCADE), and stays while it does.
        assert [stack.timer_id for stack in session.exec(select(Stack))] == [2]
        kinds = sorted((e.timer_id, e.kind) for e in session.exec(select(Event)))
        assert kinds == [(2, "acquired"), (3, "acquired"), (3, "killed")]


def test_the_service_prunes_in_the_background(
    settings: Settings, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    from tests.workers import spawn_sleeper

    ended, active = spawn_sleeper(), spawn_sleeper()
    sleepers.extend([ended, active])
    quick = replace(settings, retention_days=1.0 / 86400, prune_interval=0.2)  # one second
    with in_process(create_app(quick)) as client:
        client.post("/timers", json={"pid": ended.pid, "scope_id": "old", "expires_in": 60})
        client.post("/timers/release", json={"pid": ended.pid, "scope_id": "old"})
        kept = client.post("/timers", json={"pid": active.pid, "scope_id": "on", "expires_in": 600})
        pruned = wait_until(
            lambda: not client.get("/timers", params={"pid": ended.pid}).json()["items"], 15
        )
        assert pruned, "the ended timer was never pruned"
        assert client.get(f"/timers/{kept.json()['id']}").json()["state"] == "active"
        kinds = [
            e["kind"]
            for e in client.get("/events", params={"timer_id": kept.json()["id"]}).json()["items"]
        ]
        assert kinds == ["acquired"]
        assert "timer_pruned_events_total" in client.get("/metrics").text
