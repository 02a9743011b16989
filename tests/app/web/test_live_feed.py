"""The dashboard's live feed survives a restart: it is seeded from the database."""

from __future__ import annotations

import time
from pathlib import Path

from app.db.recorder import Recorder
from app.web.live_feed import LiveFeed
from tests.conftest import migrated_engine
from tests.sample_events import changed, event
from timer_core import TimerEvent
from timer_core.engine.event_details import Kill


def recorded(seq: int, kind: str, timer_id: int, at: float, state: str) -> TimerEvent:
    made = changed(
        event(seq, kind, timer_id, state), at=at, pid=5, acquired_at=at, expiration_time=at + 1
    )
    return changed(made, detail=Kill(0.001)) if kind == "killed" else made


def test_seeding_counts_the_last_hour_per_minute_and_the_recent_ends(tmp_path: Path) -> None:
    engine = migrated_engine(tmp_path / "feed.db")
    recorder = Recorder(engine)
    now = time.time()
    for timer_id in range(1, 121):  # one acquired and one killed a minute, 2 hours back
        at = now - timer_id * 60
        recorder(recorded(2 * timer_id, "acquired", timer_id, at, "active"))
        recorder(recorded(2 * timer_id + 1, "killed", timer_id, at + 1, "killed"))
    recorder.flush()
    feed = LiveFeed()
    feed.seed(engine)
    snapshot = feed.snapshot(now)
    assert len(snapshot["chart"]) == 60
    assert 58 <= sum(point["acquired"] for point in snapshot["chart"]) <= 60
    assert snapshot["killed_last_hour"] == sum(p["killed"] for p in snapshot["chart"])
    assert snapshot["kills_total"] == 120
    assert [end["id"] for end in snapshot["recent_ends"][:3]] == [1, 2, 3]
    assert snapshot["recent_ends"][0]["state"] == "killed"
