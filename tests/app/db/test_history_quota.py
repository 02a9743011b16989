"""``--max-db-size`` on a real database, SQLite and PostgreSQL (app.db.history_quota): over
the limit, the oldest ended history is pruned first and active timers never are; when
only active timers are left and it is still over, the history is full and new arms of
non-exempt users are refused (429 over HTTP) until it is under again."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from app.db.history_quota import HistoryQuota
from app.db.recorder import Recorder
from tests.app.service_process import ServiceProcess
from tests.conftest import migrated_engine
from tests.sample_events import changed, event
from tests.second_user import SecondUser
from tests.waiting import wait_until
from timer_core import RefusedError, TimerEvent
from timer_core.engine.user_share import HISTORY_FULL, UserShare

USER = 1001
ENDED = 40  # ended timers 1..40, oldest first
ACTIVE = (901, 902)  # armed before all of them, still active
ENDED_OVER_HTTP = 60  # through the real service


def history() -> list[TimerEvent]:
    """Two active timers acquired first, then ENDED timers, each acquired and released
    ten seconds after the one before; every scope is 600 random characters, so each
    row costs what a real one can (random: PostgreSQL cannot compress it away)."""

    def made(seq: int, kind: str, timer_id: int, state: str, at: float) -> TimerEvent:
        return changed(
            event(seq, kind, timer_id, state),
            at=at,
            pid=2000 + timer_id,
            scope_id=f"{timer_id}-{secrets.token_hex(300)}",
            uid=USER,
        )

    events = [made(n, "acquired", timer_id, "active", 1000.0 + n) for n, timer_id in
              enumerate(ACTIVE)]  # fmt: skip
    for timer_id in range(1, ENDED + 1):
        at = 2000.0 + 10 * timer_id
        events.append(made(0, "acquired", timer_id, "active", at))
        events.append(made(0, "released", timer_id, "released", at + 1))
    return [changed(item, seq=seq) for seq, item in enumerate(events, start=1)]


@pytest.fixture
def engine(backend_url: str) -> Iterator[Engine]:
    made = migrated_engine(backend_url)
    recorder = Recorder(made)
    for item in history():
        recorder(item)
    recorder.flush()
    yield made
    made.dispose()


def quota_of(engine: Engine, share: UserShare, max_bytes: int = 1) -> HistoryQuota:
    # The service's own steps (up to 1,000 events): more than this whole history.
    return HistoryQuota(engine, max_bytes, Recorder(engine).prune, share)


def timer_ids(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT id FROM timers ORDER BY id")).scalars())


def test_over_the_limit_the_oldest_ended_history_goes_first(engine: Engine) -> None:
    share = UserShare(lambda: 0.0)
    quota = quota_of(engine, share)
    full = quota.measure()
    quota.max_bytes = int(full * 0.8)
    quota.enforce()
    left = timer_ids(engine)
    ended_left = [timer_id for timer_id in left if timer_id <= ENDED]
    # Some went, some stayed: the newest ones, and every active timer.
    assert 0 < len(ended_left) < ENDED
    assert ended_left == list(range(ENDED - len(ended_left) + 1, ENDED + 1))
    assert [timer_id for timer_id in left if timer_id > ENDED] == list(ACTIVE)
    assert quota.measure() <= quota.max_bytes
    with engine.connect() as connection:
        orphans = connection.execute(
            text("SELECT count(*) FROM events WHERE timer_id NOT IN (SELECT id FROM timers)")
        ).scalar_one()
        acquired = connection.execute(
            text("SELECT timer_id FROM events WHERE timer_id > :ended ORDER BY timer_id"),
            {"ended": ENDED},
        ).scalars()
        assert (orphans, list(acquired)) == (0, list(ACTIVE))
    assert share.history_full is None


def test_a_little_over_the_limit_prunes_a_little(engine: Engine) -> None:
    """A byte over: what brings it under 90% of the limit goes, oldest first, and most of
    the history stays (a step of the oldest 1,000 events once took all 80 of them)."""
    quota = quota_of(engine, UserShare(lambda: 0.0))
    quota.max_bytes = quota.measure() - 1
    quota.enforce()
    assert quota.measure() <= quota.max_bytes * 0.9
    ended_left = [timer_id for timer_id in timer_ids(engine) if timer_id <= ENDED]
    assert len(ended_left) > ENDED / 2
    assert ended_left == list(range(ENDED - len(ended_left) + 1, ENDED + 1))


def test_when_only_active_timers_are_left_the_history_is_full(engine: Engine) -> None:
    share = UserShare(lambda: 0.0)
    quota = quota_of(engine, share, max_bytes=1)
    quota.enforce()
    assert timer_ids(engine) == list(ACTIVE)  # every ended timer pruned, no active one
    assert share.history_full is not None and "--max-db-size" in share.history_full
    with pytest.raises(RefusedError) as refused:
        share.check(USER)
    assert refused.value.kind == "limit" and refused.value.retry_after
    assert share.refusals[HISTORY_FULL] == 1
    share.check(0)  # root's workers are still armed
    # Room again (the limit raised, or timers ended and pruned): writes accepted.
    quota.max_bytes = quota.measure() * 2
    quota.enforce()
    assert share.history_full is None
    share.check(USER)


def test_the_real_service_keeps_its_database_under_max_db_size(
    tmp_path: Path, second_user: SecondUser, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """The real service with --max-db-size 250K: the second user's worker's history
    (arms and releases with long scopes) fills it, the oldest goes first and the newest
    stays; once its active timers alone fill it, the next arm gets 429."""
    worker = second_user.sleeper()
    sleepers.append(worker)
    service = ServiceProcess(
        tmp_path, "--max-db-size", "250K", env={"TIMER_SERVICE_DB_SIZE_CHECK_INTERVAL": "0.2"}
    ).start()
    try:
        with httpx.Client(base_url=service.url) as client:
            check_max_db_size(client, worker.pid)
    finally:
        service.stop()


def check_max_db_size(client: httpx.Client, pid: int) -> None:
    def arm(scope: str) -> httpx.Response:
        return client.post("/timers", json={"pid": pid, "scope_id": scope, "expires_in": 600})

    for number in range(ENDED_OVER_HTTP):  # ~240 KB of history on 120 KB of schema
        scope = f"ended-{number:03}-{secrets.token_hex(450)}"
        assert arm(scope).status_code == 201
        release = client.post("/timers/release", json={"pid": pid, "scope_id": scope})
        assert release.status_code == 200

    def ended_left() -> list[int]:
        timers = client.get("/timers", params={"limit": 1000}).json()["items"]
        ended = [timer["scope_id"] for timer in timers if timer["state"] == "released"]
        return sorted(int(scope.split("-")[1]) for scope in ended)

    assert wait_until(lambda: 0 < len(ended_left()) < ENDED_OVER_HTTP)
    left = ended_left()
    assert left == list(range(ENDED_OVER_HTTP - len(left), ENDED_OVER_HTTP))  # newest stay
    refused = None
    for number in range(200):  # active timers are never pruned: the history fills
        answer = arm(f"active-{number:03}-{secrets.token_hex(450)}")
        if answer.status_code == 429:
            refused = answer
            break
        assert answer.status_code == 201, answer.text
        time.sleep(0.05)  # a check (every 0.2 s) every few arms
    assert refused is not None and "--max-db-size" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "60"
    metrics = client.get("/metrics").text
    assert 'timer_refusals_total{reason="history_full"} 1.0' in metrics
    assert ended_left() == []  # all the ended history went before it refused
