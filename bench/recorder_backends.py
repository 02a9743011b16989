"""Recorder throughput on SQLite and on PostgreSQL, side by side: events per second
written end to end through ``app.db.recorder.Recorder`` (its writer thread, its batches,
each database's batch SQL in ``app.db.event_rows``), from the first event handed to it to
the commit of the last.

    python -m bench.recorder_backends                 # 60,000 events, 7 rounds each
    python -m bench.recorder_backends --smoke         # 3,000 events, 1 round (CI)
    python -m bench.recorder_backends --postgres URL  # another server
    python -m bench.recorder_backends --only sqlite   # one backend

The events are what workers make: per timer an acquisition, a heartbeat and a release,
labelled with a job and a rank (so the jobs upsert runs too), with fleet ids (above
2**52). Each round starts on an empty database: a fresh SQLite file (WAL, as the
service runs it), a fresh schema on PostgreSQL (by default a database of its own on
this machine's server, over the Unix socket, dropped at the end). Every round checks
that every event and timer is in the database: zero lost.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from app.db.database import make_engine, migrate
from app.db.recorder import Recorder
from bench.common import print_table, save
from timer_core import EventKind, Timer, TimerEvent, TimerState
from timer_core.engine import Labels
from timer_core.engine.event_details import Armed, Ended

BASE_ID = 2**52
PER_TIMER = (EventKind.ACQUIRED, EventKind.EXTENDED, EventKind.RELEASED)
_schemas = itertools.count(1)


def workload(events: int) -> list[TimerEvent]:
    """``events`` events (a multiple of 3): acquire, heartbeat, release per timer,
    interleaved as 64 workers of 8 jobs would send them."""
    made: list[TimerEvent] = []
    timers = events // len(PER_TIMER)
    for block in range(0, timers, 64):
        members = range(block, min(block + 64, timers))
        for kind in PER_TIMER:
            for n in members:
                seq = len(made) + 1
                released = kind == EventKind.RELEASED
                timer = Timer(
                    id=BASE_ID + n,
                    pid=10_000 + n % 64,
                    scope_id="train-step",
                    signal=9,
                    source="fifo",
                    state=TimerState.RELEASED if released else TimerState.ACTIVE,
                    acquired_at=float(seq),
                    expiration_time=float(seq) + 60.0,
                    uid=1000,
                    node="bench-node",
                    labels=Labels(f"job-{n % 8}", n % 64, n % 8, 64),
                    process_create_time=1.0,
                )
                detail = Ended(released_by="fifo") if released else Armed()
                made.append(TimerEvent(seq, kind, float(seq), timer, detail))
    return made


def run_round(engine: Engine, events: list[TimerEvent]) -> dict[str, Any]:
    migrate(engine)
    recorder = Recorder(engine, buffer_size=len(events) + 1)
    recorder.start()
    try:
        started = time.perf_counter()
        for item in events:
            recorder(item)  # as the event bus hands them over
        while recorder.committed_seq < len(events):
            if recorder.last_error is not None:
                raise RuntimeError(recorder.last_error)
            time.sleep(0.0005)
        elapsed = time.perf_counter() - started
    finally:
        recorder.stop()
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT count(*) FROM events")).scalar_one()
        timers = connection.execute(text("SELECT count(*) FROM timers")).scalar_one()
    lost = len(events) - stored + len(events) // len(PER_TIMER) - timers
    return {
        "seconds": elapsed,
        "events_per_s": len(events) / elapsed,
        "commits": recorder.commits,
        "lost": lost + recorder.rejected + recorder.dropped,
    }


@contextmanager
def local_postgres() -> Iterator[str]:
    """A database of its own on this machine's PostgreSQL (socket; role postgres, then
    root), dropped at the end; yields its URL."""
    import psycopg
    from psycopg import sql

    from tests.postgres import PostgresDatabase

    params: dict[str, Any] = {}
    admin = None
    for user in ("postgres", "root"):
        params = {"host": "/var/run/postgresql", "user": user}
        try:
            admin = psycopg.connect(**params, dbname="postgres", autocommit=True)
            break
        except psycopg.Error:
            continue
    if admin is None:
        raise SystemExit("no PostgreSQL on /var/run/postgresql: pass --postgres URL")
    name = f"timer_bench_{secrets.token_hex(4)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield PostgresDatabase(params, name).url()
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def fresh_postgres(url: str) -> Engine:
    """An engine on a new, empty schema of the database at ``url``."""
    schema = f"bench_{next(_schemas)}_{secrets.token_hex(3)}"
    setup = make_engine(url)
    with setup.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    setup.dispose()
    separator = "&" if "?" in url else "?"
    return make_engine(f"{url}{separator}options=-csearch_path%3D{schema}")


def measure(backend: str, url: str | None, events: list[TimerEvent], rounds: int) -> dict[str, Any]:
    results = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as scratch:
            if backend == "sqlite":
                engine = make_engine(f"sqlite:///{Path(scratch) / 'bench.db'}")
            else:
                assert url is not None
                engine = fresh_postgres(url)
            try:
                results.append(run_round(engine, events))
            finally:
                engine.dispose()
    rates = [result["events_per_s"] for result in results]
    return {
        "backend": backend,
        "events": len(events),
        "rounds": rounds,
        "events_per_s": rates,
        "median_events_per_s": statistics.median(rates),
        "median_commits": statistics.median(result["commits"] for result in results),
        "lost": sum(result["lost"] for result in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="3,000 events, 1 round")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--postgres", help="a postgresql+psycopg:// URL (default: local)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="one backend only")
    args = parser.parse_args()
    count, rounds = (3_000, 1) if args.smoke else (args.events, args.rounds)
    events = workload(count - count % len(PER_TIMER))

    def run(url: str | None) -> list[dict[str, Any]]:
        # One backend after the other, each with all its rounds.
        backends = [args.only] if args.only else ["sqlite", "postgresql"]
        return [measure(backend, url, events, rounds) for backend in backends]

    if args.postgres or args.only == "sqlite":
        rows = run(args.postgres)
    else:
        with local_postgres() as url:
            rows = run(url)
    print_table(
        f"Recorder throughput, {len(events):,} events per round (medians of {rounds})",
        ["backend", "events/s", "min", "max", "commits", "lost"],
        [
            [
                row["backend"],
                round(row["median_events_per_s"]),
                round(min(row["events_per_s"])),
                round(max(row["events_per_s"])),
                row["median_commits"],
                row["lost"],
            ]
            for row in rows
        ],
    )
    save("recorder_backends_smoke" if args.smoke else "recorder_backends", {"rows": rows})


if __name__ == "__main__":
    main()
