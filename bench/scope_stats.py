"""Hold-time statistics (GET /scopes) and the what-if replay over 1M timers, SQLite.

    python -m bench.scope_stats            # 1,000,000 ended timers; 50,000 jobs
    python -m bench.scope_stats --smoke    # 20,000; 2,000

The history: one long job whose scope "step" has 60 % of the timers (a few hundred of
them killed), and 50 jobs of 8 scopes sharing the rest, all of one owner (uid 1000).
Then, apart, ``--jobs`` jobs of one timer each: the unfiltered ``GET /scopes`` over
them. The rows are the columns the recorder writes for an acquired and ended timer,
inserted in bulk, and each job's row of the jobs table as the recorder keeps it (the
recorder's own speed is bench.growth's). Reads go through the real app (TestClient),
median of 20 each.
"""

from __future__ import annotations

import argparse
import math
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from app.db.database import make_engine, migrate
from app.main import create_app
from app.settings import Settings
from bench.common import median_get_ms, print_table, save

_COLUMNS = (
    "id, pid, scope_id, signal, source, state, acquired_at, expiration_time, ended_at,"
    " end_reason, node, job_id, rank, world_size, uid"
)


def _rows(timers: int) -> Iterator[tuple[object, ...]]:
    rng = random.Random(24)
    at = time.time() - 86400
    big = int(timers * 0.6)
    for timer_id in range(1, timers + 1):
        if timer_id <= big:
            job, scope, median = "big", "step", 1.0
        else:
            n = timer_id - big
            job, scope, median = f"job-{n % 50}", f"s-{n // 50 % 8}", 0.2 + n % 8
        hold = median * math.exp(rng.gauss(0.0, 0.25))
        hung = rng.random() < 0.0005
        state, reason = ("killed", "signal 9 sent") if hung else ("released", "released")
        ended = at + (30.0 if hung else hold)
        yield (
            timer_id,
            1000 + timer_id % 5000,
            scope,
            9,
            "http",
            state,
            at,
            at + 30.0,
            ended,
            reason,
            "node-a",
            job,
            timer_id % 8,
            8,
            1000,
        )
        at += 0.05


def _one_timer_jobs(jobs: int) -> Iterator[tuple[object, ...]]:
    at = time.time() - 86400
    for timer_id in range(1, jobs + 1):
        ended = at + 0.5
        row = (timer_id, 1000, "s", 9, "http", "released", at, at + 30.0, ended, "released")
        yield (*row, "node-a", f"job-{timer_id}", 0, 1, 1000)
        at += 0.05


def fill(path: Path, timers: int, rows: Iterator[tuple[object, ...]] | None = None) -> float:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    began = time.monotonic()
    with sqlite3.connect(path) as connection:
        marks = ", ".join("?" * len(_COLUMNS.split(",")))
        connection.executemany(
            f"INSERT INTO timers ({_COLUMNS}) VALUES ({marks})",
            _rows(timers) if rows is None else rows,
        )
        # The jobs table, as the recorder keeps it: GET /scopes without a job reads it.
        connection.execute(
            "INSERT INTO jobs (job_id, uid, world_size, first_seen, last_seen, incidents)"
            " SELECT job_id, uid, max(world_size), min(acquired_at), max(ended_at), 0"
            " FROM timers GROUP BY job_id, uid"
        )
        connection.execute("ANALYZE")
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=50_000)
    args = parser.parse_args()
    timers = 20_000 if args.smoke else args.timers
    jobs = 2_000 if args.smoke else args.jobs
    big = int(timers * 0.6)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scopes.db"
        seconds = fill(path, timers)
        settings = Settings(db_url=f"sqlite:///{path}")
        with TestClient(create_app(settings), base_url="http://localhost") as client:
            reads: dict[str, tuple[str, dict[str, str | int]]] = {
                "GET /scopes?job=big&scope=step": ("/scopes", {"job": "big", "scope": "step"}),
                "GET /scopes?job=job-7 (8 scopes)": ("/scopes", {"job": "job-7"}),
                "GET /scopes (401 scopes, first 100)": ("/scopes", {}),
                f"GET /scopes/whatif, {big:,} timers": (
                    "/scopes/whatif",
                    {"job": "big", "scope": "step", "timeout": 3},
                ),
                "GET /scopes/whatif, ~1,000 timers": (
                    "/scopes/whatif",
                    {"job": "job-7", "scope": "s-3", "timeout": 3},
                ),
            }
            timings = {
                name: median_get_ms(client, route, params)
                for name, (route, params) in reads.items()
            }
            replay = client.get(
                "/scopes/whatif", params=reads[f"GET /scopes/whatif, {big:,} timers"][1]
            )
        path = Path(tmp) / "jobs.db"
        fill(path, jobs, _one_timer_jobs(jobs))
        settings = Settings(db_url=f"sqlite:///{path}")
        with TestClient(create_app(settings), base_url="http://localhost") as client:
            name = f"GET /scopes over {jobs:,} one-timer jobs (a page: 100 jobs)"
            timings[name] = median_get_ms(client, "/scopes", {})
    print_table(
        f"Scope statistics at {timers:,} timers (SQLite, filled in {seconds:.1f} s)",
        ["read", "median ms"],
        [[name, ms] for name, ms in timings.items()],
    )
    save(
        "scope_stats_smoke" if args.smoke else "scope_stats",
        {
            "timers": timers,
            "big_scope": big,
            "jobs": jobs,
            "whatif": replay.json(),
            "read_median_ms": timings,
        },
    )


if __name__ == "__main__":
    main()
