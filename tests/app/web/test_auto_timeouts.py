"""``"expires_in": "auto"`` over HTTP, in process (contract 12): the initial timeout
until the job's scope has enough healthy holds, then the learned one, never below the
floor; ``timeout_source`` stored and shown; a database that cannot answer leaves the
last learned timeout or the initial one; bad values refused; and
``expires(after="auto")`` refused by the clients that send a deadline of their own."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import timer_core as timer
from app.access.callers import Caller
from app.db.learned_timeouts import LearnedTimeouts
from app.db.models import TimerCreate
from app.main import create_app
from app.settings import Settings
from app.web.auto_timeouts import _job_of, auto_timeout
from tests.app.hold_history import Hold, record, scope_history
from tests.conftest import in_process, migrated_engine, service_of, worker_node_of

JOB = "run-auto"
ROOT = Caller(0, "unix", "test")
STRANGER = os.geteuid() + 4242


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # Six recorded steps of 2 s of one job's scope, by this user's workers: above the
    # minimum of 5. Another user's workers claiming the same job id: as many of a scope.
    database = tmp_path / "timers.db"
    engine = migrated_engine(database)
    mine = scope_history([Hold(2.0)] * 6, job=JOB, scope="learned", first_id=1, uid=os.geteuid())
    theirs = scope_history([Hold(0.5)] * 6, job=JOB, scope="theirs", first_id=100, uid=STRANGER)
    record(engine, mine + theirs)
    engine.dispose()
    settings = Settings(
        db_url=f"sqlite:///{database}",
        auto_min_samples=5,
        auto_initial_timeout=300.0,
        auto_floor=1.0,
    )
    with in_process(create_app(settings)) as test_client:
        yield test_client


def arm(client: TestClient, pid: int, scope: str, **extra: Any) -> dict[str, Any]:
    body = {"pid": pid, "scope_id": scope, "expires_in": "auto", "job_id": JOB, **extra}
    response = client.post("/timers", json=body)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


def timeout_of(timer: dict[str, Any]) -> float:
    return float(timer["expiration_time"] - timer["acquired_at"])


def test_auto_uses_the_initial_timeout_then_the_learned_one(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    fresh = arm(client, sleeper.pid, "fresh")
    assert fresh["timeout_source"] == "initial"
    # Another user's holds of this job's id and a scope: not this worker's to learn from.
    theirs = arm(client, sleeper.pid, "theirs")
    assert theirs["timeout_source"] == "initial"
    assert timeout_of(theirs) == pytest.approx(300.0, abs=0.5)
    assert timeout_of(fresh) == pytest.approx(300.0, abs=0.5)
    learned = arm(client, sleeper.pid, "learned")
    assert learned["timeout_source"] == "learned"
    # max(floor 1, 3 x 2, 1.5 x 2)
    assert timeout_of(learned) == pytest.approx(6.0, abs=0.5)
    stored = client.get(f"/timers/{learned['id']}").json()
    assert stored["timeout_source"] == "learned"
    explicit = client.post(
        "/timers", json={"pid": sleeper.pid, "scope_id": "own", "expires_in": 60}
    ).json()
    assert explicit["timeout_source"] == "explicit"
    page = client.get(f"/ui/timers/{learned['id']}").text
    assert 'data-timeout-source="learned"' in page
    # Released five times: the fresh scope learns from those holds, never below the
    # floor. How long each hold lasted is up to the machine (under load a round trip
    # took 0.8 s), so the rule is applied to the holds as recorded, and the deadline is
    # measured from the request that moved it (a heartbeat keeps acquired_at).
    for _ in range(5):
        client.post("/timers/release", json={"pid": sleeper.pid, "scope_id": "fresh"})
        arm(client, sleeper.pid, "fresh")
    sent = time.time()
    again = arm(client, sleeper.pid, "fresh")
    answered = time.time()
    [holds] = client.get("/scopes", params={"job": JOB, "scope": "fresh"}).json()["items"]
    assert holds["count"] == 5, holds
    rule = max(1.0, 3 * holds["p99"], 1.5 * holds["max"])  # --auto-floor 1
    assert holds["suggested_timeout"] == pytest.approx(rule, abs=0.01), holds
    assert again["timeout_source"] == "learned"
    assert sent - 0.05 <= again["expiration_time"] - rule <= answered + 0.05, (again, holds)
    # A heartbeat moves the deadline; how the timer's first deadline was chosen stays.
    assert (
        client.post(
            "/timers", json={"pid": sleeper.pid, "scope_id": "fresh", "expires_in": 30}
        ).json()["timeout_source"]
        == "learned"
    )


def test_the_job_is_read_from_the_worker_when_the_request_names_none(
    client: TestClient, tmp_path: Path
) -> None:
    worker = subprocess.Popen(
        ["sleep", "60"], env={"TORCHELASTIC_RUN_ID": JOB, "PATH": "/usr/bin:/bin"}
    )
    try:
        body = {"pid": worker.pid, "scope_id": "learned", "expires_in": "auto"}
        answer = client.post("/timers", json=body).json()
        assert (answer["job_id"], answer["timeout_source"]) == (JOB, "learned")
    finally:
        worker.kill()
        worker.wait()


def test_only_a_caller_who_may_act_on_the_worker_has_its_environment_read(
    client: TestClient,
) -> None:
    # Root's process, asked about by root, then by another uid: that caller is refused
    # by the engine anyway, and its request must not have the worker's environment read.
    reaper = worker_node_of(client).reaper
    worker = subprocess.Popen(
        ["sleep", "60"], env={"TORCHELASTIC_RUN_ID": JOB, "PATH": "/usr/bin:/bin"}
    )
    try:
        owner = Caller(os.stat(f"/proc/{worker.pid}").st_uid, "unix", "test")
        stranger = Caller(owner.uid + 4242 if owner.uid is not None else 4242, "unix", "test")
        assert asyncio.run(_job_of(reaper, worker.pid, owner)) == JOB
        assert asyncio.run(_job_of(reaper, worker.pid, stranger)) is None
        assert asyncio.run(_job_of(reaper, 2**40, owner)) is None
        assert asyncio.run(_job_of(reaper, -1, owner)) is None
        # Another user's request (which the engine refuses) asks no database either:
        # the learned scope's timeout is the owner's answer, the initial one the other's.
        learned: LearnedTimeouts = service_of(client).learned
        for caller, expected in ((owner, 6.0), (stranger, 300.0)):
            body = TimerCreate(pid=worker.pid, scope_id="learned", expires_in="auto")
            choice = asyncio.run(
                auto_timeout(learned, False, reaper, body, time.monotonic(), caller)
            )
            assert choice.seconds == expected
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.parametrize(
    "extra",
    [
        {"expires_in": "AUTO"},
        {"expires_in": "auto "},
        {"expires_in": "5"},
        {"expires_in": None, "expiration_time": None},
        {"expires_in": "auto", "expiration_time": time.time() + 60},
        {"expires_in": ["auto"]},
        {"expires_in": True},
    ],
)
def test_bad_deadlines_are_refused_and_arm_nothing(
    client: TestClient, sleeper: subprocess.Popen[bytes], extra: dict[str, Any]
) -> None:
    response = client.post("/timers", json={"pid": sleeper.pid, "scope_id": "bad", **extra})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert worker_node_of(client).reaper.live_timers() == []


def test_without_the_database_auto_keeps_the_last_learned_timeout(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    learned: LearnedTimeouts = service_of(client).learned
    reaper = worker_node_of(client).reaper

    def choose(scope: str, now: float) -> tuple[float, str]:
        body = timer_create(sleeper.pid, scope)
        choice = asyncio.run(auto_timeout(learned, True, reaper, body, now, ROOT))
        return choice.seconds, choice.source

    # Never learned here: the initial timeout, without asking the database.
    assert choose("learned", time.monotonic()) == (300.0, "initial")
    arm(client, sleeper.pid, "learned")  # learns it, from the database
    assert choose("learned", time.monotonic() + 3600) == (6.0, "learned")
    assert choose("other", time.monotonic()) == (300.0, "initial")


def timer_create(pid: int, scope: str) -> TimerCreate:
    return TimerCreate(pid=pid, scope_id=scope, expires_in="auto", job_id=JOB)


@pytest.mark.parametrize(
    "client_of",
    [
        lambda tmp: timer.FileTimerClient(str(tmp / "fifo")),
        lambda tmp: timer.LocalTimerClient(multiprocessing.get_context("spawn").Queue()),
    ],
)
def test_clients_that_send_a_deadline_refuse_auto(tmp_path: Path, client_of: Any) -> None:
    with (
        pytest.raises(TypeError, match="HttpTimerClient"),
        timer.expires(after="auto", scope="s", client=client_of(tmp_path)),
    ):
        pytest.fail("the block ran without a timer")
