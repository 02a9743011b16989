"""Hold-time statistics and the what-if replay (contract 12), counted by SQLite and
PostgreSQL over histories written by the real recorder, checked against the same
holds counted in Python."""

from __future__ import annotations

from sqlalchemy import Engine

from app.db import scope_stats
from tests.app.hold_history import (
    BASE,
    Hold,
    lognormal_holds,
    nearest_rank,
    record,
    scope_history,
)

# Three hangs among 10,000 healthy steps of about a second: the "done when".
STEPS = lognormal_holds(10_000, 1.0, seed=24)
HANGS = {2_000: 31.0, 6_000: 12.5, 9_000: 600.0}
# The uid of the workers of these histories (tests.app.hold_history's default).
OWNER = 1000
OTHER = 2000


def _history() -> list[Hold]:
    holds = [Hold(seconds) for seconds in STEPS]
    for position, seconds in sorted(HANGS.items(), reverse=True):
        holds.insert(position, Hold(seconds, hung=True))
    return holds


def test_whatif_counts_the_healthy_holds_it_kills_and_the_hangs_it_catches(
    backend_engine: Engine,
) -> None:
    holds = _history()
    # Another job's scope of the same name, and workers that died early: not counted.
    others = [Hold(50.0), Hold(40.0, gone=True), Hold(2.5, gone=True)]
    record(
        backend_engine,
        scope_history(holds, job="run-1", scope="step", first_id=1)
        + scope_history(others, job="run-2", scope="step", first_id=20_000)
        + scope_history(others[1:], job="run-1", scope="step", first_id=30_000, start=1e9)
        # Another user's workers labelled with the same job and scope: another job.
        + scope_history(
            [Hold(50.0), Hold(70.0, hung=True)],
            job="run-1",
            scope="step",
            first_id=40_000,
            uid=OTHER,
        ),
    )
    with backend_engine.connect() as connection:
        for timeout in (1.2, 2.0, 12.5, 40.0, 700.0):
            answer = scope_stats.what_if(connection, "run-1", OWNER, "step", timeout)
            caught = [seconds for seconds in HANGS.values() if seconds >= timeout]
            assert answer.timeout == timeout
            assert answer.considered == 10_003
            assert answer.would_have_killed == sum(s > timeout for s in STEPS)
            assert answer.hung == len(caught)
            assert answer.hangs == 3
            assert abs(answer.earlier_by_seconds - sum(s - timeout for s in caught)) < 1e-6
        # Some healthy steps are longer than 1.2 s, none is longer than 12.5 s.
        assert scope_stats.what_if(connection, "run-1", OWNER, "step", 1.2).would_have_killed > 0
        assert scope_stats.what_if(connection, "run-1", OWNER, "step", 12.5).would_have_killed == 0
        # The other user's job of the same id: its own holds only.
        theirs = scope_stats.what_if(connection, "run-1", OTHER, "step", 45.0)
        assert (theirs.considered, theirs.would_have_killed, theirs.hangs) == (2, 1, 1)
        stats = scope_stats.hold_stats(connection, "run-1", OTHER, "step", 100)
        assert stats is not None and (stats.count, stats.max) == (1, 50.0)


def test_statistics_cover_the_last_window_of_healthy_holds(backend_engine: Engine) -> None:
    holds = [*_history(), Hold(3.0, gone=True)]
    record(backend_engine, scope_history(holds, job="run-1", scope="step", first_id=1))
    with backend_engine.connect() as connection:
        for window in (1, 100, 1000, 10_000, 50_000):
            stats = scope_stats.hold_stats(connection, "run-1", OWNER, "step", window)
            recent = STEPS[-window:]
            assert stats == scope_stats.HoldStats(
                len(recent),
                nearest_rank(recent, 50),
                nearest_rank(recent, 90),
                nearest_rank(recent, 99),
                max(recent),
            )
        assert scope_stats.hold_stats(connection, "run-2", OWNER, "step", 100) is None
        assert scope_stats.hold_stats(connection, None, OWNER, "step", 100) is None


def test_scopes_list_each_job_and_scope_with_the_suggestion(backend_engine: Engine) -> None:
    fast = lognormal_holds(200, 0.5, seed=1)
    slow = lognormal_holds(50, 20.0, seed=2)
    record(
        backend_engine,
        scope_history([Hold(s) for s in fast], job="run-1", scope="fwd", first_id=1)
        + scope_history([Hold(s) for s in slow], job="run-1", scope="ckpt", first_id=1000)
        + scope_history([Hold(4.0)], job=None, scope="fwd", first_id=2000, start=BASE + 2048)
        # Another user's workers claiming run-1: its own item, with its uid.
        + scope_history(
            [Hold(90.0)], job="run-1", scope="fwd", first_id=3000, start=BASE - 4096, uid=OTHER
        ),
    )
    with backend_engine.connect() as connection:

        def listed(*args: object) -> list[scope_stats.ScopeStats]:
            return scope_stats.scope_stats(connection, *args).items  # type: ignore[arg-type]

        items = listed(None, None, None, 100, 10.0, 100)
        # The most recently released first.
        assert [(i.job_id, i.uid, i.scope_id) for i in items] == [
            (None, OWNER, "fwd"),
            ("run-1", OWNER, "ckpt"),
            ("run-1", OWNER, "fwd"),
            ("run-1", OTHER, "fwd"),
        ]
        fwd = items[2]
        recent = fast[-100:]
        assert (fwd.count, fwd.window, fwd.max) == (100, 100, max(recent))
        # Half-second steps: the floor.
        assert fwd.suggested_timeout == 10.0
        ckpt = items[1]
        assert ckpt.suggested_timeout == max(3 * nearest_rank(slow, 99), 1.5 * max(slow))
        assert ckpt.suggested_timeout > 10.0
        only = listed("run-1", OWNER, "fwd", 1000, 1.0, 100)
        assert [(i.scope_id, i.count) for i in only] == [("fwd", 200)]
        theirs = listed("run-1", OTHER, None, 1000, 1.0, 100)
        assert [(i.scope_id, i.count, i.max) for i in theirs] == [("fwd", 1, 90.0)]
        assert [i.uid for i in listed("run-1", None, "fwd", 1000, 1.0, 100)] == [OWNER, OTHER]
        assert listed(None, None, None, 100, 1.0, 1)[0].job_id is None


def test_without_a_job_the_scopes_of_the_jobs_active_last_come_a_page_at_a_time(
    backend_engine: Engine,
) -> None:
    # One more job than a page: each released one hold, the later the higher its number.
    jobs = scope_stats.JOBS_PER_PAGE + 1
    events = []
    for number in range(jobs):
        start = BASE + number * 16
        events += scope_history(
            [Hold(1.0)], job=f"job-{number}", scope="s", first_id=1 + number, start=start
        )
    record(backend_engine, events)
    with backend_engine.connect() as connection:
        first = scope_stats.scope_stats(connection, None, None, None, 10, 1.0, 1000)
        assert [i.job_id for i in first.items] == [f"job-{n}" for n in range(jobs - 1, 0, -1)]
        assert first.next is not None
        rest = scope_stats.scope_stats(connection, None, None, None, 10, 1.0, 1000, first.next)
        assert ([i.job_id for i in rest.items], rest.next) == (["job-0"], None)


def test_whatif_over_a_window_takes_the_hangs_of_the_same_span(backend_engine: Engine) -> None:
    holds = _history()
    events = scope_history(holds, job="run-1", scope="step", first_id=1)
    record(backend_engine, events)
    # When each hold ended: the second event of each timer.
    ends = [(hold, made.at) for hold, made in zip(holds, events[1::2], strict=True)]
    with backend_engine.connect() as connection:
        for window in (500, 1000, 5000):
            healthy = [(h, at) for h, at in ends if not h.hung][-window:]
            since = healthy[0][1]
            hangs = [h.seconds for h, at in ends if h.hung and at >= since]
            answer = scope_stats.what_if(connection, "run-1", OWNER, "step", 1.5, window)
            assert answer.considered == window + len(hangs)
            assert answer.would_have_killed == sum(h.seconds > 1.5 for h, _ in healthy)
            assert (answer.hung, answer.hangs) == (len(hangs), len(hangs))
        # The hang before the 9,001st of 10,000 steps: past the last 1,000 of them, within
        # the last 1,100.
        assert scope_stats.what_if(connection, "run-1", OWNER, "step", 1.5, 1000).hangs == 0
        assert scope_stats.what_if(connection, "run-1", OWNER, "step", 1.5, 1100).hangs == 1
