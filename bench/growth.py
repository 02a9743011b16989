"""Growth: SQLite bytes per 1M events, and how long filtered reads take at that size.

    python -m bench.growth            # 1,000,000 events (500k timers)
    python -m bench.growth --smoke    # 20,000 events

Events go in through the service's own Recorder (group commit, as in production);
the reads go through the real app (TestClient), median of 20 each.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db.database import make_engine, migrate
from app.db.recorder import Recorder
from app.main import create_app
from app.settings import Settings
from bench.common import median_get_ms, print_table, save, save_chart
from timer_core import EventKind, Timer, TimerEvent, TimerState
from timer_core.engine.event_details import Armed, Ended, EventDetail, Kill, NoKill

_BATCH = 5000
# How the history's timers end (weighted 96:3:1 below).
_ENDS: list[tuple[EventKind, TimerState, EventDetail]] = [
    (EventKind.RELEASED, TimerState.RELEASED, Ended(released_by="http")),
    (EventKind.KILLED, TimerState.KILLED, Kill(0.0013)),
    (EventKind.EXPIRED, TimerState.EXPIRED, NoKill("observe only", 0.0)),
]


def fill(db_url: str, events: int) -> float:
    """Write ``events`` events (half acquisitions, half ends); returns the seconds taken."""
    engine = make_engine(db_url)
    migrate(engine)
    recorder = Recorder(engine, buffer_size=events + 1)
    rng = random.Random(7)
    start_at = time.time() - 30 * 86400
    began = time.monotonic()
    for timer_id in range(1, events // 2 + 1):
        at = start_at + timer_id * (30 * 86400) / (events / 2)
        pid = 1000 + timer_id % 5000
        scope = f"train.py#{timer_id % 400} step"
        kind, state, detail = rng.choices(_ENDS, weights=[96, 3, 1])[0]
        for seq_offset, (event_kind, event_state, event_detail, event_at) in enumerate(
            ((EventKind.ACQUIRED, TimerState.ACTIVE, Armed(), at), (kind, state, detail, at + 30))
        ):
            timer = Timer(
                id=timer_id,
                pid=pid,
                scope_id=scope,
                signal=9,
                source="http",
                state=event_state,
                acquired_at=at,
                expiration_time=at + 60,
                process_create_time=at - 5,
            )
            recorder(
                TimerEvent(2 * timer_id + seq_offset, event_kind, event_at, timer, event_detail)
            )
        if timer_id % (_BATCH // 2) == 0:
            recorder.flush()
            print(f"\r  {2 * timer_id:,} / {events:,} events written", end="", flush=True)
    recorder.flush()
    print()
    with engine.begin() as connection:
        connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    engine.dispose()
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    events = 20_000 if args.smoke else args.events
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "growth.db"
        db_url = f"sqlite:///{db_path}"
        seconds = fill(db_url, events)
        size = sum(p.stat().st_size for p in Path(tmp).glob("growth.db*"))
        with TestClient(create_app(Settings(db_url=db_url)), base_url="http://localhost") as client:
            middle = events // 4
            reads: dict[str, tuple[str, dict[str, str | int]]] = {
                "GET /events?timer_id=N": ("/events", {"timer_id": middle}),
                "GET /events?kind=killed&limit=100": ("/events", {"kind": "killed", "limit": 100}),
                "GET /events?kind=expired&cursor=(middle)": (
                    "/events",
                    {"kind": "expired", "limit": 100, "cursor": events // 2},
                ),
                "GET /events?limit=100": ("/events", {"limit": 100}),
                "GET /timers?pid=N": ("/timers", {"pid": 1000 + middle % 5000}),
                "GET /timers?state=killed": ("/timers", {"state": "killed"}),
            }
            timings = {
                name: median_get_ms(client, path, params) for name, (path, params) in reads.items()
            }
    bytes_per_million = size / events * 1_000_000
    print_table(
        f"SQLite growth at {events:,} events ({events / seconds:,.0f} events/s written)",
        ["measure", "value"],
        [["file size (MB)", size / 2**20], ["MB per 1M events", bytes_per_million / 2**20]]
        + [[f"{name} median ms", ms] for name, ms in timings.items()],
    )
    name = "growth_smoke" if args.smoke else "growth"
    save(
        name,
        {
            "events": events,
            "bytes": size,
            "bytes_per_million_events": bytes_per_million,
            "write_events_per_s": events / seconds,
            "read_median_ms": timings,
        },
    )
    save_chart(
        name,
        f"Reads at {events:,} events (median ms)",
        list(timings),
        {"ms": list(timings.values())},
        "ms",
    )


if __name__ == "__main__":
    main()
